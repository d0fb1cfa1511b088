#!/usr/bin/env bash
# The Raspberry Pi OS packages, built and tested here: for arm64 and armhf (or the triples
# given), builds the release .deb with scripts/package.sh (lintian, glibc ceiling), then
# runs the binary from that .deb under qemu-user (scripts/smoke-qemu.sh). Prints the wall
# time of each step. CI runs it from scripts/test.sh; run it as root on Debian/Ubuntu.
#
#   scripts/cross-test.sh
#   scripts/cross-test.sh aarch64-unknown-linux-gnu
#   scripts/cross-test.sh --unit-tests [TRIPLE...]
#
# --unit-tests instead runs the library's unit tests for the target under qemu-user (a
# debug build in target/cross; about 5 min to build and 1 min to run for arm64 on 2
# cores, so not part of CI). A few tests cannot pass under qemu-user; they are skipped
# here, each with the reason, and run natively in the x86_64 suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cross.sh

unit=0
if [ "${1:-}" = --unit-tests ]; then
  unit=1
  shift
fi
triples=("$@")
[ ${#triples[@]} -gt 0 ] || triples=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

# Unit tests that qemu-user 7.2 (Debian 12) cannot run, and why:
qemu_skips=(
  # Unknown ioctls (the watchdog's WDIOC_*) give ENOSYS under qemu-user, not the kernel's
  # ENOTTY for a plain file (qemu reports ENOTTY only from 8.1 on), so the plain-file
  # stand-in for /dev/watchdog fails to open as one.
  watchdog::device::tests::dropping_the_device_is_not_a_magic_close
  watchdog::device::tests::keepalive_on_a_plain_file_falls_back_to_writing_a_byte
  watchdog::device::tests::magic_close_writes_v_last
  watchdog::device::tests::timeout_ioctls_on_a_plain_file_report_unknown_instead_of_failing
  watchdog::feeder::tests::the_real_device_on_a_file_gets_keepalive_bytes_and_v_last_after_a_clean_stop
  watchdog::feeder::tests::the_real_device_on_a_file_gets_no_byte_while_unhealthy
  # qemu-user runs glibc's posix_spawn (clone with CLONE_VM|CLONE_VFORK) as a plain fork,
  # so a failed exec is not reported to the parent: the child just exits 127.
  reboot::tests::a_missing_or_empty_graceful_command_is_an_error_not_a_panic
)

if [ "$unit" = 1 ]; then
  export CARGO_TARGET_DIR="$NODEMEDIC_CROSS_TARGET_DIR"
  skips=()
  for s in "${qemu_skips[@]}"; do skips+=(--skip "$s"); done
  for t in "${triples[@]}"; do
    (
      nodemedic_cross_setup "$t"
      nodemedic_apt_install qemu-user
      up="${t^^}"
      # Loader and libc from the same package: see scripts/smoke-qemu.sh.
      export "CARGO_TARGET_${up//-/_}_RUNNER=$NM_QEMU -L /usr/$NM_GNU -E LD_LIBRARY_PATH=/usr/$NM_GNU/lib"
      start=$(date +%s)
      "$NODEMEDIC_CARGO" test --locked --lib --target "$t" --no-run
      built=$(date +%s)
      "$NODEMEDIC_CARGO" test --locked --lib --target "$t" -- --exact "${skips[@]}"
      echo "unit tests for $t under $NM_QEMU: build $((built - start)) s, run $(( $(date +%s) - built )) s" >&2
    )
  done
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
blocked=0
for t in "${triples[@]}"; do
  nodemedic_cross_arch "$t"
  if why=$(nodemedic_cross_unobtainable "$t"); then
    # Outside this project's control (the archive's mirror), and said as loudly as a failure.
    echo "" >&2
    echo "*** BLOCKED: $NM_DEB_ARCH package NOT built or tested: $why ***" >&2
    echo "" >&2
    summary+=("$NM_DEB_ARCH: BLOCKED, not built or tested: $why")
    blocked=$((blocked + 1))
    continue
  fi
  start=$(date +%s)
  deb=$(scripts/package.sh --target "$t" | tail -n1)
  built=$(date +%s)
  # Test what ships: the binary inside the .deb.
  bin="$work/nodemedic-$NM_DEB_ARCH"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/nodemedic >"$bin"
  chmod +x "$bin"
  glibc=$(nodemedic_glibc_ceiling "$bin" "" "/usr/bin/nodemedic in $(basename "$deb")")
  scripts/smoke-qemu.sh "$t" "$bin"
  done_at=$(date +%s)
  summary+=("$NM_DEB_ARCH: $(basename "$deb"), binary $(stat -c %s "$bin") bytes, needs $glibc; package $((built - start)) s (toolchain install included), smoke $((done_at - built)) s")
done
printf 'cross-test: %s\n' "${summary[@]}" >&2
