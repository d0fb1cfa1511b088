#!/usr/bin/env bash
# Smoke test of a cross-built nodemedic binary under qemu-user (Debian's qemu-user):
#
#   scripts/smoke-qemu.sh aarch64-unknown-linux-gnu target/cross/aarch64-unknown-linux-gnu/release/nodemedic
#   scripts/smoke-qemu.sh armv7-unknown-linux-gnueabihf path/to/nodemedic
#
# Runs, each under a deadline: --version; config default, then config check (and a broken
# config: exit 78); classify on fixture lines; check --json on this machine (it must
# finish and every detector must answer); preflight --dry-run without containerd (exit
# 0); run on a fixture host root on a free loopback port, serving /metrics and /healthz
# for a few seconds, then a clean stop on SIGTERM (exit 0). Prints the RSS of `run` under
# qemu (emulator included: information only). Exits non-zero on the first failure.
# Run as root on Debian/Ubuntu (installs qemu-user and the target's libc if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cross.sh

[ $# -eq 2 ] || { echo "usage: $0 TRIPLE BINARY" >&2; exit 2; }
triple="$1"
bin="$(realpath "$2")"
nodemedic_cross_arch "$triple"
native=0
[ "$NM_DEB_ARCH" = "$(dpkg --print-architecture)" ] && native=1
if [ "$native" = 1 ]; then
  nodemedic_apt_install curl
else
  nodemedic_apt_install qemu-user curl "libc6-$NM_DEB_ARCH-cross"
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
work=$(mktemp -d)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill -KILL "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# fd 3: the script's stderr, also inside commands whose stderr is redirected.
exec 3>&2
fail() {
  echo "SMOKE FAILED ($triple): $*" >&3
  exit 1
}

# The guest's loader is /usr/<gnu>/lib/ld-linux-*.so (-L). It reads the host's
# /etc/ld.so.cache, which lists /lib/<gnu>/libc.so.6 once libc6:<arch> is installed (the
# Debian toolchain pulls it in): a different glibc build than the loader's, and that
# mismatched pair spins forever in the first pthread_create (issue 23's "check hangs
# under qemu"; single-threaded commands work). LD_LIBRARY_PATH keeps loader and libc
# from the same package.
qemu=("$NM_QEMU" -L "/usr/$NM_GNU" -E "LD_LIBRARY_PATH=/usr/$NM_GNU/lib" "$bin")
# On a machine of the target's own architecture (a Pi): the same steps, without qemu.
[ "$native" = 1 ] && qemu=("$bin")
# Each one-shot command must finish well within this (they take about a second here).
deadline=60

# nm CMD...: runs nodemedic under qemu with the deadline; its exit code in $rc.
nm() {
  rc=0
  timeout -k 5 "$deadline" "${qemu[@]}" "$@" || rc=$?
  [ "$rc" != 124 ] && [ "$rc" != 137 ] || fail "nodemedic $* did not finish within $deadline s"
}

step() { echo "smoke ($triple): $*" >&3; }

step "--version"
nm --version >"$work/out"
[ "$rc" = 0 ] || fail "--version exited $rc"
grep -qx "nodemedic $version" "$work/out" || fail "--version printed: $(cat "$work/out")"

step "config default, config check"
nm config default >"$work/default.toml"
[ "$rc" = 0 ] || fail "config default exited $rc"
grep -q '^mode = "observe"' "$work/default.toml" || fail "config default: no mode line"
nm config check "$work/default.toml" >"$work/out" 2>&1
[ "$rc" = 0 ] || fail "config check of the default config exited $rc: $(cat "$work/out")"
grep -q "valid" "$work/out" || fail "config check printed: $(cat "$work/out")"
printf 'mode = "heal"\n' >"$work/bad.toml"
nm config check "$work/bad.toml" >"$work/out" 2>&1
[ "$rc" = 78 ] || fail "config check of a bad mode exited $rc, want 78: $(cat "$work/out")"
grep -q "mode" "$work/out" || fail "the config error does not name the key: $(cat "$work/out")"

step "classify"
cat >"$work/lines" <<'EOF'
[  123.456789] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
Nov 21 17:35:41 pi5 kernel: nfs: server nas.local not responding, still trying
6,1234,5000000,-;INFO: task kworker/u8:2:123 blocked for more than 120 seconds.
hello world
EOF
nm classify <"$work/lines" >"$work/out"
[ "$rc" = 0 ] || fail "classify exited $rc"
[ "$(wc -l <"$work/out")" = 4 ] || fail "classify: want 4 verdicts, got: $(cat "$work/out")"
for k in '"kind":"rcu_stall"' '"kind":"nfs_not_responding"' '"kind":"hung_task"' '"kind":null'; do
  grep -qF "$k" "$work/out" || fail "classify: no $k in: $(cat "$work/out")"
done

# A config for the one-shot commands and the daemon: its own state directory.
mkdir -p "$work/state"
cat >"$work/smoke.toml" <<EOF
state_dir = "$work/state"
[preflight]
clock_wait = "0s"
EOF

step "check --json (this machine, under a deadline)"
nm check --json --config "$work/smoke.toml" >"$work/check.json" 2>"$work/check.err"
# 0 healthy, 1 a problem holds on this machine: both are answers.
[ "$rc" = 0 ] || [ "$rc" = 1 ] || fail "check exited $rc: $(cat "$work/check.err")"
grep -q '"healthy": ' "$work/check.json" || fail "check --json: no verdict: $(cat "$work/check.json")"
for area in kernel mounts runtime memory; do
  grep -q "\"area\": \"$area\"" "$work/check.json" || fail "check --json: no $area rows"
done
if grep -q '"detail": "timed out' "$work/check.json"; then
  fail "check: a probe timed out: $(grep -B3 '"detail": "timed out' "$work/check.json")"
fi

step "preflight --dry-run (no containerd)"
nm preflight --dry-run --config "$work/smoke.toml" >"$work/out" 2>&1
[ "$rc" = 0 ] || fail "preflight exited $rc: $(cat "$work/out")"
grep -q "nothing to remove" "$work/out" || fail "preflight printed: $(cat "$work/out")"
grep -q '"outcome": "dry_run"' "$work/state/preflight.json" || fail "no dry-run report in preflight.json"

step "run on a fixture host root"
root="$work/root"
mkdir -p "$root/proc/sys/kernel/random" "$root/proc/pressure" "$root/proc/self" "$root/dev" \
  "$root/boot" "$work/run-state"
echo "5b5e0b8a-6f3c-4d7e-9a1b-0c2d3e4f5a6b" >"$root/proc/sys/kernel/random/boot_id"
echo "6.6.31+rpt-rpi-v8" >"$root/proc/sys/kernel/osrelease"
echo "CONFIG_HZ=250" >"$root/boot/config-6.6.31+rpt-rpi-v8"
cat >"$root/proc/meminfo" <<'EOF'
MemTotal:        3884000 kB
MemFree:         1000000 kB
MemAvailable:    2000000 kB
SwapTotal:        102396 kB
SwapFree:         102396 kB
EOF
cat >"$root/proc/pressure/memory" <<'EOF'
some avg10=0.00 avg60=0.00 avg300=0.00 total=1000
full avg10=0.00 avg60=0.00 avg300=0.00 total=500
EOF
echo "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw" >"$root/proc/self/mountinfo"
# The real kernel log when readable (root), else none: the daemon reports it and runs on.
[ -r /dev/kmsg ] && ln -s /dev/kmsg "$root/dev/kmsg"
cat >"$work/run.toml" <<EOF
listen = "127.0.0.1:0"
state_dir = "$work/run-state"
host_root = "$root"
[kubernetes]
enabled = false
EOF
# Port 0: the kernel picks a free port; the daemon logs the address it bound.
"${qemu[@]}" run --config "$work/run.toml" 2>"$work/run.log" &
daemon_pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's,.*listening on http://\([^ ]*\).*,\1,p' "$work/run.log")
  [ -n "$addr" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || fail "run exited at start: $(cat "$work/run.log")"
  sleep 0.2
done
[ -n "$addr" ] || fail "run did not listen within 20 s: $(cat "$work/run.log")"
# Serve for a few seconds: the detector loops must keep beating under emulation.
for round in 1 2 3; do
  curl -fsS --max-time 10 "http://$addr/healthz" >"$work/healthz" \
    || fail "/healthz (round $round) failed: $(cat "$work/run.log")"
  [ "$(cat "$work/healthz")" = ok ] || fail "/healthz answered: $(cat "$work/healthz")"
  curl -fsS --max-time 10 "http://$addr/metrics" >"$work/metrics" || fail "/metrics failed"
  for want in "nodemedic_up 1" 'nodemedic_build_info{version="'"$version"'"' \
              'nodemedic_condition{condition="MemoryPressure"} 0' "# EOF"; do
    grep -qF "$want" "$work/metrics" || fail "/metrics (round $round) lacks: $want"
  done
  sleep 2
done
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$daemon_pid/status")
kill -TERM "$daemon_pid"
rc=""
for _ in $(seq 100); do
  kill -0 "$daemon_pid" 2>/dev/null || { wait "$daemon_pid" && rc=0 || rc=$?; break; }
  sleep 0.2
done
[ -n "$rc" ] || fail "run did not stop within 20 s of SIGTERM: $(tail -5 "$work/run.log")"
daemon_pid=""
[ "$rc" = 0 ] || fail "run exited $rc on SIGTERM: $(tail -5 "$work/run.log")"
grep -q "stopped cleanly" "$work/run.log" || fail "no clean stop in the log: $(tail -5 "$work/run.log")"
grep -q '"last_seen_unix"' "$work/run-state/state.json" || fail "no state saved on stop"

if [ "$native" = 1 ]; then
  echo "smoke ($triple): all passed (native); RSS of run: ${rss} kB (peak ${hwm} kB)" >&2
else
  echo "smoke ($triple): all passed; RSS of run under $NM_QEMU: ${rss} kB (peak ${hwm} kB, emulator included)" >&2
fi
