#!/usr/bin/env bash
# The Raspberry Pi OS packages, built and tested here: for arm64 and armhf (or the triples
# given), builds the release .deb with scripts/package.sh (lintian, glibc ceiling), then
# runs the binary from that .deb under qemu-user (scripts/smoke-qemu.sh). Prints the wall
# time of each step. CI runs it from scripts/test.sh; run it as root on Debian/Ubuntu.
#
#   scripts/cross-test.sh
#   scripts/cross-test.sh aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cross.sh

triples=("$@")
[ ${#triples[@]} -gt 0 ] || triples=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
for t in "${triples[@]}"; do
  nodemedic_cross_arch "$t"
  start=$(date +%s)
  deb=$(scripts/package.sh --target "$t" | tail -n1)
  built=$(date +%s)
  # Test what ships: the binary inside the .deb.
  bin="$work/nodemedic-$NM_DEB_ARCH"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/nodemedic >"$bin"
  chmod +x "$bin"
  glibc=$(nodemedic_glibc_ceiling "$bin")
  scripts/smoke-qemu.sh "$t" "$bin"
  done_at=$(date +%s)
  summary+=("$NM_DEB_ARCH: $(basename "$deb"), binary $(stat -c %s "$bin") bytes, needs $glibc; package $((built - start)) s (toolchain install included), smoke $((done_at - built)) s")
done
printf 'cross-test: %s\n' "${summary[@]}" >&2
