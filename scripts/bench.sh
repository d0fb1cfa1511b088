#!/usr/bin/env bash
# Benchmarks nodemedic against its goals, side by side with node_exporter, and prints one
# markdown table (results go in BENCHMARKS.md). NOT part of the test suite: CI does not
# run it; it takes a few minutes, needs root, installs Debian packages and writes lines to
# /dev/kmsg. Run as root on a Debian machine:
#
#   BENCH_SECONDS=60 scripts/bench.sh
#
# Environment (defaults in brackets):
#   BENCH_SECONDS [60]            footprint window; both daemons are sampled in the same one
#   BENCH_SCRAPE_EVERY [15]       both daemons get GET /metrics this often, as Prometheus would
#   BENCH_WARMUP [10]             seconds between both answering /metrics and the window
#   BENCH_EVENTS [200]            stall lines written to /dev/kmsg for the detection delay
#   BENCH_POLL_MS [1]             /metrics poll interval while waiting for a detection
#   BENCH_THROUGHPUT_RUNS [3]     runs of the classifier throughput test (median reported)
#   BENCH_PREFLIGHT_RUNS [3]      runs of the preflight timing with 0/10/100 dead sandboxes on
#                                 a private containerd (median reported; 0 skips it), on each
#                                 version of BENCH_PREFLIGHT_CONTAINERD. Installs containerd,
#                                 runc, CNI plugins, busybox-static, gcc, iproute2
#   BENCH_PREFLIGHT_CONTAINERD ["1.6 2"]  containerd series for the preflight timing, side by
#                                 side: 1.6 is bookworm's, others are unpacked by scripts/deps.sh
#   BENCH_HUNG_MOUNTS [20]        hung FUSE mounts present while /metrics is timed
#   BENCH_HUNG_SCRAPES [300]      /metrics scrapes timed while they hang
#   BENCH_HTTP_SECONDS [30]       probing time under each HTTP attack (32 clients that never
#                                 read; a slowloris of 256 connections from 64 addresses)
#   BENCH_NODEMEDIC_ADDR [127.0.0.1:19847]  BENCH_NODE_EXPORTER_ADDR [127.0.0.1:19100]
#   BENCH_MEMORY_RUNS [1]         runs of the memory-pressure delay (a real thrashing cgroup with
#                                 swap: from the stall's start to MemoryPressure, sampling every 2 s
#                                 and waiting on PSI triggers, default timings; 0 skips it). Needs
#                                 cgroups with PSI, gcc, mkswap/swapon
#   BENCH_BURST [1000]            kernel records written at once for the burst footprint
#   BENCH_BURST_SECONDS [60]      window (starting with the burst) the burst is measured over
#   BENCH_QUICK [0]               1: only the footprint and burst windows (no delay test, no
#                                 hung mounts, no throughput or preflight runs)
#   BENCH_BIN []                  a release binary to measure instead of building one (e.g.
#                                 an older commit's, for before/after figures)
#   BENCH_KEEP [0]                1 keeps the temp dir (configs, logs, raw JSON)
#   CARGO_TARGET_DIR [target]     where cargo builds
# Build and install progress goes to stderr; the report goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

WINDOW=${BENCH_SECONDS:-60}
SCRAPE_EVERY=${BENCH_SCRAPE_EVERY:-15}
WARMUP=${BENCH_WARMUP:-10}
EVENTS=${BENCH_EVENTS:-200}
POLL_MS=${BENCH_POLL_MS:-1}
THROUGHPUT_RUNS=${BENCH_THROUGHPUT_RUNS:-3}
PREFLIGHT_RUNS=${BENCH_PREFLIGHT_RUNS:-3}
NM_ADDR=${BENCH_NODEMEDIC_ADDR:-127.0.0.1:19847}
NE_ADDR=${BENCH_NODE_EXPORTER_ADDR:-127.0.0.1:19100}
MEMORY_RUNS=${BENCH_MEMORY_RUNS:-1}
BURST=${BENCH_BURST:-1000}
BURST_SECONDS=${BENCH_BURST_SECONDS:-60}
QUICK=${BENCH_QUICK:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BENCH_BIN:-$TARGET_DIR/release/nodemedic}
NE_BIN=/usr/bin/prometheus-node-exporter
HELPER=scripts/bench/bench.py
# The goals are judged on a window of at least this many seconds.
MIN_WINDOW=60

for pair in BENCH_SECONDS:WINDOW BENCH_SCRAPE_EVERY:SCRAPE_EVERY BENCH_WARMUP:WARMUP \
  BENCH_EVENTS:EVENTS BENCH_THROUGHPUT_RUNS:THROUGHPUT_RUNS BENCH_BURST:BURST \
  BENCH_BURST_SECONDS:BURST_SECONDS; do
  v=${pair#*:}
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "bench: ${pair%%:*} must be a positive integer, got '${!v}'" >&2
    exit 2
  fi
done
if [ "$QUICK" = 1 ]; then
  PREFLIGHT_RUNS=0
  MEMORY_RUNS=0
fi
if ! [[ $MEMORY_RUNS =~ ^[0-9]+$ ]]; then
  echo "bench: BENCH_MEMORY_RUNS must be a non-negative integer, got '$MEMORY_RUNS'" >&2
  exit 2
fi
if ! [[ $PREFLIGHT_RUNS =~ ^[0-9]+$ ]]; then
  echo "bench: BENCH_PREFLIGHT_RUNS must be a non-negative integer, got '$PREFLIGHT_RUNS'" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (it reads and writes /dev/kmsg and installs packages)" >&2
  exit 2
fi

WORK=$(mktemp -d /tmp/nodemedic-bench.XXXXXX)
PIDS=()
OWN_POLICY_RC=0

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [ "$OWN_POLICY_RC" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  # Hung FUSE mounts left under $WORK by an interrupted bench_hung_mounts, before rm -rf.
  # (grep finds none after a normal run: under pipefail that must not end the cleanup.)
  { grep -o " $WORK/hung/[^ ]*" /proc/self/mounts || true; } | while read -r m; do umount -l "$m" || true; done
  if [ -n "${RUN_DIR:-}" ]; then
    rm -rf "$RUN_DIR"
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_deps() {
  local missing=() p
  # protoc: containerd-client and k8s-cri generate gRPC code at build time.
  local want=(protobuf-compiler prometheus-node-exporter python3)
  # The preflight timing runs the integration tests' private containerd test bed.
  if [ "$PREFLIGHT_RUNS" -gt 0 ]; then
    want+=(containerd runc containernetworking-plugins busybox-static gcc iproute2)
  fi
  for p in "${want[@]}"; do
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not a shell variable.
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}" >&2
    # The package's own node_exporter service must not run: it would add load and is
    # not the instance measured. policy-rc.d 101 tells invoke-rc.d not to start it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      OWN_POLICY_RC=1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    if [ "$OWN_POLICY_RC" = 1 ]; then
      rm -f /usr/sbin/policy-rc.d
      OWN_POLICY_RC=0
    fi
  fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus-node-exporter.service >/dev/null 2>&1 || true
  fi
  if [ -z "${BENCH_BIN:-}" ] && ! command -v cargo >/dev/null; then
    echo "bench: cargo is missing: install Rust (rustup) first" >&2
    exit 1
  fi
  if [ "$PREFLIGHT_RUNS" -gt 0 ]; then
    # containerd 1.7 / 2.x from Debian's archive, unpacked, never installed.
    # shellcheck source=scripts/deps.sh
    . scripts/deps.sh
    nodemedic_fetch_containerd >&2
  fi
}

# Waits for the daemon's "listening on" log line, failing early if it died.
wait_for_log() {
  local pid=$1 log=$2 i
  for i in $(seq 300); do
    grep -q "listening on http://" "$log" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench: nodemedic exited during startup:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "bench: nodemedic did not log 'listening on' within 30 s:" >&2
  cat "$log" >&2
  exit 1
}

# Mounts both daemons probe (node_exporter's filesystem collector too): a hung one left
# by another workload makes neither daemon idle, so the report says how many there were.
net_mounts() {
  awk '$3 ~ /^(fuse|nfs)/ {n++} END {print n + 0}' /proc/self/mounts
}

# Conditions nodemedic holds now: a held one keeps the policy loop ticking, so the idle
# wake-ups are only idle with none (another developer's forged kmsg stall lines count here,
# since the bench trusts userspace kmsg lines for its delay test).
held_now() {
  python3 -c '
import re, sys, urllib.request
body = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=10).read().decode()
held = re.findall(r"^nodemedic_condition\{condition=\"(\w+)\"\} 1$", body, re.M)
print(", ".join(held) or "none")' "$NM_ADDR"
}

# Conditions nodemedic has raised so far (its log says "condition X raised").
raised() {
  grep -c 'condition .* raised' "$WORK/nodemedic.log" || true
}

machine() {
  local mem_kib
  mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  echo "- machine: $(nproc) CPUs ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $((mem_kib / 1024)) MiB RAM, kernel $(uname -r)"
}

# --- /metrics latency with hung FUSE mounts ---------------------------------------------
HUNG_MOUNTS=${BENCH_HUNG_MOUNTS:-20}
HUNG_SCRAPES=${BENCH_HUNG_SCRAPES:-300}
for v in HUNG_MOUNTS HUNG_SCRAPES; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "bench: BENCH_$v must be a positive integer, got '${!v}'" >&2
    exit 2
  fi
done

# Mounts never-answering FUSE filesystems (the integration tests' hang fixture, rebuilt in
# bench.py), waits until the running nodemedic reports every one stuck, then times
# /metrics while they stay hung and the prober keeps watching them; node_exporter gets a
# few scrapes of the same for comparison. Unmounts them before returning.
bench_hung_mounts() {
  if [ ! -c /dev/fuse ]; then
    echo "bench: no /dev/fuse: the hung-mount latency is not measured" >&2
    return 0
  fi
  echo "bench: /metrics latency with $HUNG_MOUNTS hung FUSE mounts, $HUNG_SCRAPES scrapes" >&2
  python3 "$HELPER" hung --hostport "$NM_ADDR" --dir "$WORK/hung" --mounts "$HUNG_MOUNTS" \
    --scrapes "$HUNG_SCRAPES" --compare-url "http://$NE_ADDR/metrics" --out "$WORK/hung.json"
}
# --- end of the hung-mount section -------------------------------------------------------

# --- /metrics under HTTP abuse (issue 18, point 3) ----------------------------------------
HTTP_SECONDS=${BENCH_HTTP_SECONDS:-30}
if ! [[ $HTTP_SECONDS =~ ^[1-9][0-9]*$ ]]; then
  echo "bench: BENCH_HTTP_SECONDS must be a positive integer, got '$HTTP_SECONDS'" >&2
  exit 2
fi
HTTP_HELPER=scripts/bench/http_abuse.py
# Probes /metrics from 127.0.0.1 ten times a second while attackers on other loopback
# addresses (127.0.0.2, ...) hold connections: (a) 32 clients that pipeline requests and
# never read, (b) a slowloris of 256 connections from 64 addresses; both reconnect at once
# when dropped.
bench_http_abuse() {
  echo "bench: /metrics under HTTP abuse, ${HTTP_SECONDS}s per attack" >&2
  python3 "$HTTP_HELPER" --hostport "$NM_ADDR" --attack never-read --clients 32 --addresses 32 \
    --seconds "$HTTP_SECONDS" >"$WORK/http-never-read.json"
  python3 "$HTTP_HELPER" --hostport "$NM_ADDR" --attack slowloris --clients 256 --addresses 64 \
    --seconds "$HTTP_SECONDS" >"$WORK/http-slowloris.json"
}
# --- end of the HTTP abuse section -------------------------------------------------------

install_deps
if [ "$(cat /proc/sys/kernel/printk_devkmsg)" = off ]; then
  echo "bench: kernel.printk_devkmsg=off: /dev/kmsg cannot be opened; set it to ratelimit or on" >&2
  exit 1
fi

if [ -n "${BENCH_BIN:-}" ]; then
  echo "bench: measuring the given binary $BIN (nothing built)" >&2
else
  echo "bench: building (release binary and the release lib tests)" >&2
  if [ "$QUICK" != 1 ]; then
    cargo test --release --locked --lib --no-run >&2
  fi
  if [ "$PREFLIGHT_RUNS" -gt 0 ] || [ "$MEMORY_RUNS" -gt 0 ]; then
    cargo test --release --locked --test it --no-run >&2
  fi
  # Last: building the tests links target/release/nodemedic with the `fakes` feature on (the
  # tests' dev-dependency); the binary measured must be the one `cargo build` ships.
  cargo build --release --locked >&2
fi

STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
mkdir -p "$WORK/state"
# The kmsg cursor's home is `runtime_dir`, a tmpfs on a node (/run). Where /run is not one
# (this development VM's is on the root fs) it would count as disk writes, so the bench gives
# a binary that has the key a private tmpfs dir; older binaries keep the cursor in state_dir.
RUN_DIR=
RUN_DIR_NOTE="none (this binary keeps the kmsg cursor in state_dir)"
if "$BIN" config default 2>/dev/null | grep -q '^runtime_dir'; then
  if [ "$(stat -f -c %T /run 2>/dev/null)" = tmpfs ]; then
    RUN_DIR=$(mktemp -d /run/nodemedic-bench.XXXXXX)
  else
    RUN_DIR=$(mktemp -d /dev/shm/nodemedic-bench.XXXXXX)
  fi
  RUN_DIR_NOTE="$RUN_DIR ($(stat -f -c %T "$RUN_DIR"))"
fi
cat >"$WORK/nodemedic.toml" <<EOF
# Defaults everywhere (every detector on, default intervals, observe mode), except:
listen = "$NM_ADDR"
state_dir = "$WORK/state"
${RUN_DIR:+runtime_dir = \"$RUN_DIR\"}
EOF
if [ "$QUICK" != 1 ]; then
  # The delay test writes its stall lines from userspace (facility 1). Without it (quick
  # runs), userspace lines stay untrusted, as on a node: another developer's forged stall
  # lines on a shared machine then raise nothing that would keep the policy loop ticking.
  printf '\n[kernel]\naccept_non_kernel_facilities = true\n' >>"$WORK/nodemedic.toml"
fi

# As under the packaged unit: its WatchdogSec= makes the keep-alive thread wake every half
# of it. The notify socket is a path nobody listens on: the keep-alives are sent and
# dropped, which costs the daemon what it costs under systemd.
WATCHDOG_SEC=$(sed -n 's/^WatchdogSec=\([0-9]*\)s$/\1/p' systemd/nodemedic.service)
[ -n "$WATCHDOG_SEC" ] || { echo "bench: no WatchdogSec=<n>s in systemd/nodemedic.service" >&2; exit 2; }
NOTIFY_SOCKET="$WORK/notify.sock" WATCHDOG_USEC=$((WATCHDOG_SEC * 1000000)) \
  "$BIN" run --config "$WORK/nodemedic.toml" 2>"$WORK/nodemedic.log" &
NM_PID=$!
PIDS+=("$NM_PID")
wait_for_log "$NM_PID" "$WORK/nodemedic.log"

for exe in /proc/[0-9]*/exe; do
  if [ "$(readlink "$exe" 2>/dev/null)" = "$NE_BIN" ]; then
    echo "bench: warning: another node_exporter runs (${exe%/exe}); it adds load to this machine" >&2
  fi
done
# Default collectors: only the listen address is set.
"$NE_BIN" --web.listen-address="$NE_ADDR" 2>"$WORK/node_exporter.log" &
NE_PID=$!
PIDS+=("$NE_PID")

python3 "$HELPER" wait "http://$NM_ADDR/metrics"
python3 "$HELPER" wait "http://$NE_ADDR/metrics"
echo "bench: warming up ${WARMUP}s, then sampling both for ${WINDOW}s" >&2
sleep "$WARMUP"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
MOUNTS_BEFORE=$(net_mounts)
RAISED_BEFORE=$(raised)
HELD_BEFORE=$(held_now)
python3 "$HELPER" footprint \
  --name nodemedic --pid "$NM_PID" --url "http://$NM_ADDR/metrics" \
  --name node_exporter --pid "$NE_PID" --url "http://$NE_ADDR/metrics" \
  --seconds "$WINDOW" --scrape-every "$SCRAPE_EVERY" --out "$WORK/footprint.json"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
MOUNTS_AFTER=$(net_mounts)
RAISED_AFTER=$(raised)
HELD_AFTER=$(held_now)

if [ "$QUICK" != 1 ]; then
  echo "bench: detection delay over $EVENTS stall lines" >&2
  python3 "$HELPER" delay --hostport "$NM_ADDR" --count "$EVENTS" --poll-ms "$POLL_MS" \
    --out "$WORK/delay.json"
fi

# A kernel-log storm: wake-ups and writes while $BURST records arrive at once.
echo "bench: burst of $BURST kernel records, sampling both for ${BURST_SECONDS}s" >&2
python3 "$HELPER" burst --name nodemedic --pid "$NM_PID" --name node_exporter --pid "$NE_PID" \
  --count "$BURST" --seconds "$BURST_SECONDS" --out "$WORK/burst.json"

# After the footprint window, the delay test and the burst, so the mounts disturb none.
if [ "$QUICK" != 1 ]; then
  bench_hung_mounts
  bench_http_abuse
fi

for pid in "${PIDS[@]}"; do
  stop_pid "$pid"
done
PIDS=()

if [ "$QUICK" != 1 ]; then
  echo "bench: classifier throughput, $THROUGHPUT_RUNS runs" >&2
  logs=()
  for i in $(seq "$THROUGHPUT_RUNS"); do
    cargo test --release --locked --lib -- --ignored --nocapture throughput >"$WORK/throughput-$i.log" 2>&1
    logs+=("$WORK/throughput-$i.log")
  done
  python3 "$HELPER" throughput --out "$WORK/throughput.json" "${logs[@]}"
fi

if [ "$PREFLIGHT_RUNS" -gt 0 ]; then
  echo "bench: preflight time with 0/10/100 dead sandboxes, $PREFLIGHT_RUNS runs" >&2
  logs=()
  for series in ${BENCH_PREFLIGHT_CONTAINERD:-1.6 2}; do
    for i in $(seq "$PREFLIGHT_RUNS"); do
      # CI=true: a missing test-bed prerequisite fails loudly instead of skipping.
      if ! CI=true NODEMEDIC_TEST_CONTAINERD_DIR="$(nodemedic_containerd_dir "$series")" \
        cargo test --release --locked --test it -- --ignored --nocapture --exact \
        containerd_preflight::preflight_time_with_0_10_100_dead_sandboxes \
        >"$WORK/preflight-$series-$i.log" 2>&1; then
        echo "bench: the preflight timing on containerd $series failed:" >&2
        tail -n 40 "$WORK/preflight-$series-$i.log" >&2
        exit 1
      fi
      logs+=("$WORK/preflight-$series-$i.log")
    done
  done
  python3 "$HELPER" preflight --out "$WORK/preflight.json" "${logs[@]}"
fi

if [ "$MEMORY_RUNS" -gt 0 ]; then
  echo "bench: memory-pressure delay (PSI triggers vs 2 s sampling), $MEMORY_RUNS runs" >&2
  logs=()
  for i in $(seq "$MEMORY_RUNS"); do
    if ! CI=true cargo test --release --locked --test it -- --ignored --nocapture --exact \
      memory_pressure::memory_pressure_delay_with_default_timings \
      >"$WORK/memory-$i.log" 2>&1; then
      echo "bench: the memory-pressure delay run failed:" >&2
      tail -n 40 "$WORK/memory-$i.log" >&2
      exit 1
    fi
    logs+=("$WORK/memory-$i.log")
  done
  python3 "$HELPER" memory --out "$WORK/memory.json" "${logs[@]}"
fi

stat -c %s "$BIN" >"$WORK/binary_size"

echo "## nodemedic benchmark, $STARTED"
echo
machine
echo "- nodemedic $("$BIN" --version 2>/dev/null | awk '{print $NF}'), $(if [ -n "${BENCH_BIN:-}" ]; then echo "binary given by BENCH_BIN (its commit is not known here)"; else echo "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"; fi); node_exporter $("$NE_BIN" --version 2>&1 | awk 'NR == 1 {print $3}')"
echo "- command: BENCH_SECONDS=$WINDOW BENCH_EVENTS=$EVENTS BENCH_BURST=$BURST BENCH_QUICK=$QUICK${BENCH_BIN:+ BENCH_BIN=$BENCH_BIN} scripts/bench.sh (scrape every ${SCRAPE_EVERY}s, warm-up ${WARMUP}s, poll ${POLL_MS} ms)"
echo "- load average at window start / end: $LOAD_BEFORE / $LOAD_AFTER (the machine may be shared: wake-ups and bytes written are counts that load does not distort; CPU and delays are not)"
echo "- FUSE/NFS mounts at window start / end: $MOUNTS_BEFORE / $MOUNTS_AFTER; conditions nodemedic raised in the window: $((RAISED_AFTER - RAISED_BEFORE)); held at window start / end: $HELD_BEFORE / $HELD_AFTER"
echo "- binary: $(ls -l "$BIN"); runtime_dir: $RUN_DIR_NOTE"
if [ "$PREFLIGHT_RUNS" -gt 0 ]; then
  for series in ${BENCH_PREFLIGHT_CONTAINERD:-1.6 2}; do
    echo "- preflight timing: $("$(nodemedic_containerd_dir "$series")/containerd" --version 2>/dev/null | awk '{print $1, $3}'), $(runc --version 2>/dev/null | awk 'NR == 1 {print $1, $3}')"
  done
fi
if [ "$WINDOW" -lt "$MIN_WINDOW" ]; then
  echo "- WARNING: window of ${WINDOW}s is shorter than the ${MIN_WINDOW}s the goals are judged on"
fi
echo
python3 "$HELPER" table --dir "$WORK"
if [ "$QUICK" != 1 ]; then
  echo
  echo "/metrics under HTTP abuse (probes from 127.0.0.1, attackers on other loopback addresses):"
  echo
  python3 "$HTTP_HELPER" table "$WORK/http-never-read.json" "$WORK/http-slowloris.json"
fi
