#!/usr/bin/env bash
# Idle footprint of nodemedic with the k3s probes on: the release binary as the packaged
# nodemedic.service under systemd (PID 1 in systemd-nspawn, with its D-Bus, journald and
# logind), next to a k3s stand-in whose main process serves the kubelet's /healthz (BusyBox
# httpd), so every pass reads the unit over D-Bus, follows its journal (a journalctl child)
# and probes the kubelet. node_exporter runs on the host in the same window for scale.
# NOT part of the test suite. Run as root after `cargo build --release`:
#
#   BENCH_SECONDS=120 scripts/bench-k3s.sh [path/to/nodemedic]
#
# Prints one markdown table: RSS (median and max of 1 s samples) and CPU (utime+stime over
# the window, and per-thread schedstat in ns; % of one core) of nodemedic, of its
# journalctl child, and of node_exporter. Both daemons get GET /metrics every
# BENCH_SCRAPE_EVERY (15) seconds, as in scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

WINDOW=${BENCH_SECONDS:-120}
WARMUP=${BENCH_WARMUP:-15}
SCRAPE_EVERY=${BENCH_SCRAPE_EVERY:-15}
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/nodemedic}
NE_ADDR=${BENCH_NODE_EXPORTER_ADDR:-127.0.0.1:19100}
[ -x "$BIN" ] || { echo "bench-k3s: no $BIN; run cargo build --release first" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "bench-k3s: run as root" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || { echo "bench-k3s: needs systemd-nspawn (systemd-container)" >&2; exit 2; }
command -v busybox >/dev/null || { echo "bench-k3s: needs busybox (busybox-static)" >&2; exit 2; }
if [ ! -x /usr/bin/prometheus-node-exporter ]; then
  echo "bench-k3s: installing prometheus-node-exporter (its own service is kept stopped)" >&2
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >&2
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  systemctl disable --now prometheus-node-exporter.service >/dev/null 2>&1 || true
fi

tmp=$(mktemp -d)
nspawn_pid=
ne_pid=
cleanup() {
  [ -n "$ne_pid" ] && kill "$ne_pid" 2>/dev/null || true
  [ -n "$nspawn_pid" ] && kill "$nspawn_pid" 2>/dev/null && wait "$nspawn_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/usr/bin" "$tmp/usr/lib/systemd/system" "$tmp/etc" "$tmp/state"
cp "$BIN" "$tmp/usr/bin/nodemedic"
cp systemd/nodemedic.service systemd/nodemedic-clean-shutdown.service "$tmp/usr/lib/systemd/system/"
for d in k3s.service.d k3s-agent.service.d; do
  mkdir -p "$tmp/usr/lib/systemd/system/$d"
  cp "systemd/$d/10-nodemedic-preflight.conf" "$tmp/usr/lib/systemd/system/$d/"
done
printf 'enable nodemedic.service\nenable nodemedic-clean-shutdown.service\nenable k3s.service\ndisable *\n' >"$tmp/etc/preset"
cat >"$tmp/etc/k3s.service" <<'EOF'
[Unit]
Description=k3s stand-in: its main process answers the kubelet's /healthz
[Service]
Type=simple
ExecStartPre=/bin/sh -c 'mkdir -p /run/kubelet-www && echo ok > /run/kubelet-www/healthz'
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:10248 -h /run/kubelet-www
[Install]
WantedBy=multi-user.target
EOF
# The default config (every detector on, observe mode); only the listen address is set.
# BENCH_K3S=0 turns the k3s and clock detectors off: the same setting without them.
printf 'listen = "127.0.0.1:9847"\n' >"$tmp/etc/config.toml"
if [ "${BENCH_K3S:-1}" = 0 ]; then
  printf '[k3s]\nenabled = false\n[clock]\nenabled = false\n' >>"$tmp/etc/config.toml"
fi

echo "bench-k3s: booting the container" >&2
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --quiet --directory=/ --volatile=yes \
  --register=no --keep-unit --console=pipe --private-network --capability=CAP_SYSLOG \
  --system-call-filter="bpf adjtimex clock_adjtime" --bind=/dev/kmsg \
  --machine="nmbench-$$" --overlay="/usr:$tmp/usr:/usr" \
  --bind-ro="$tmp/etc/preset:/etc/systemd/system-preset/00-nodemedic-bench.preset" \
  --bind-ro="$tmp/etc/k3s.service:/etc/systemd/system/k3s.service" \
  --bind="$tmp/etc/config.toml:/etc/nodemedic/config.toml" \
  --bind="$tmp/state:/var/lib/nodemedic" -b >/dev/null 2>&1 &
nspawn_pid=$!

# The container's init, then nodemedic's main pid (host pids, via the container's cgroup).
init=
for _ in $(seq 600); do
  init=$(cat /proc/$nspawn_pid/task/*/children 2>/dev/null | tr ' ' '\n' | while read -r p; do
    [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = systemd ] && echo "$p"; done | head -1 || true)
  [ -n "$init" ] && break
  sleep 0.1
done
[ -n "$init" ] || { echo "bench-k3s: no container init" >&2; exit 1; }
in_ct() { nsenter -t "$init" -m -p -u -i -- "$@"; }
nm_pid=
ct_ns=$(readlink /proc/$init/ns/pid)
for _ in $(seq 600); do
  if [ "$(in_ct systemctl show -p ActiveState --value nodemedic.service 2>/dev/null)" = active ] &&
     [ "$(in_ct systemctl show -p ActiveState --value k3s.service 2>/dev/null)" = active ]; then
    # The host pid of the container's nodemedic: same pid namespace as the container's init.
    nm_pid=$(for f in /proc/[0-9]*/comm; do
      p=${f#/proc/}; p=${p%/comm}
      [ "$(cat "$f" 2>/dev/null)" = nodemedic ] &&
        [ "$(readlink /proc/$p/ns/pid 2>/dev/null)" = "$ct_ns" ] && echo "$p"
    done | head -1 || true)
    [ -n "$nm_pid" ] && break
  fi
  sleep 0.1
done
[ -n "$nm_pid" ] || { echo "bench-k3s: nodemedic did not start in the container" >&2; exit 1; }
# Wait for the journal follower and a first probe answer.
for _ in $(seq 300); do
  nsenter -t "$init" -n -- curl -s http://127.0.0.1:9847/metrics 2>/dev/null |
    grep -q 'nodemedic_k3s_probe_up{probe="kubelet"} 1' && break
  sleep 0.1
done
jc_pid=$(cat /proc/$nm_pid/task/*/children 2>/dev/null | tr ' ' '\n' | while read -r p; do
  [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = journalctl ] && echo "$p"; done | head -1 || true)

"/usr/bin/prometheus-node-exporter" --web.listen-address="$NE_ADDR" >/dev/null 2>&1 &
ne_pid=$!
sleep 1
kill -0 "$ne_pid" 2>/dev/null || { echo "bench-k3s: node_exporter exited (is $NE_ADDR taken? set BENCH_NODE_EXPORTER_ADDR)" >&2; exit 1; }
echo "bench-k3s: nodemedic pid $nm_pid, journalctl pid ${jc_pid:-none}, node_exporter pid $ne_pid; warm-up ${WARMUP}s, window ${WINDOW}s" >&2
sleep "$WARMUP"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Run time of every thread in ns (schedstat): a tick (10 ms) is too coarse for a 60 s window.
sched_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
# Wake-ups: voluntary + involuntary context switches of every thread (as bench.py counts).
ctx() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A t0 samples
declare -A n0
declare -A c0
for p in $nm_pid ${jc_pid:-} $ne_pid; do t0[$p]=$(ticks "$p"); n0[$p]=$(sched_ns "$p"); c0[$p]=$(ctx "$p"); samples[$p]=; done
# Both get GET /metrics every SCRAPE_EVERY seconds, as Prometheus would (bench.sh does the same).
for i in $(seq "$WINDOW"); do
  if [ $(( (i - 1) % SCRAPE_EVERY )) = 0 ]; then
    nsenter -t "$init" -n -- curl -s -o /dev/null http://127.0.0.1:9847/metrics || true
    curl -s -o /dev/null "http://$NE_ADDR/metrics" || true
  fi
  for p in $nm_pid ${jc_pid:-} $ne_pid; do samples[$p]+="$(rss_kib "$p") "; done
  sleep 1
done
hz=$(getconf CLK_TCK)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

row() { # name pid
  local p=$2 dt dn dc
  dt=$(( $(ticks "$p") - ${t0[$p]} ))
  dn=$(( $(sched_ns "$p") - ${n0[$p]} ))
  dc=$(( $(ctx "$p") - ${c0[$p]} ))
  echo "${samples[$p]}" | tr ' ' '\n' | grep . | sort -n | awk -v name="$1" -v dt="$dt" -v dn="$dn" -v dc="$dc" -v hz="$hz" -v w="$WINDOW" '
    { a[NR] = $1 } END {
      med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
      printf "| %s | %.2f MiB | %.2f MiB | %.3f %% (%d ticks) | %.4f %% (%.1f ms) | %.1f |\n", name, med / 1024, a[NR] / 1024, 100 * dt / hz / w, dt, 100 * dn / 1e9 / w, dn / 1e6, 60 * dc / w
    }'
}
echo "load average at window start / end: $load_start / $load_end ($(nproc) CPUs; other work on this machine counts in it)"
echo
echo "| process | RSS median | RSS max | CPU over ${WINDOW} s (utime+stime) | CPU by schedstat | wake-ups a minute |"
echo "|---|---|---|---|---|---|"
row "nodemedic ($([ "${BENCH_K3S:-1}" = 0 ] && echo 'k3s and clock detectors off' || echo 'k3s probes, unit over D-Bus, journal, clock on'))" "$nm_pid"
[ -n "${jc_pid:-}" ] && row "its journalctl child" "$jc_pid"
row "node_exporter (host, default collectors, scraped every ${SCRAPE_EVERY} s too)" "$ne_pid"
echo
echo "nodemedic at the end of the window: $(awk '/^Threads:/ {print $2}' /proc/$nm_pid/status) threads;" \
  "$(awk '/^(Rss|Pss_Anon|Pss_File):/ {printf "%s %.2f MiB  ", $1, $2 / 1024}' /proc/$nm_pid/smaps_rollup)"
echo
echo "k3s series at the end of the window:"
nsenter -t "$init" -n -- curl -s http://127.0.0.1:9847/metrics |
  grep -E '^nodemedic_(k3s_probe_up|k3s_unit_state\{state="active"\}|k3s_journal_entries_total|clock_synchronized|detector_errors_total)' | sed 's/^/    /'
