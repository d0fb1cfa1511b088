#!/usr/bin/env bash
# Runs every nodemedic test, installing what the tests need first. Run as root on a
# Debian/Ubuntu machine: many tests use the real kernel (/dev/kmsg, FUSE, namespaces).
# The real-containerd tests (`containerd_*` in tests/it) run once per containerd version:
# bookworm's 1.6, and 1.7 and 2.x unpacked by scripts/deps.sh (NODEMEDIC_TEST_CONTAINERD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
nodemedic_install_deps
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
containerd_group='binary(it) & test(/^containerd_/)'
failed=()
cargo nextest run --locked --no-fail-fast -E "not ($containerd_group)" || failed+=("the main run")
for series in 1.6 1.7 2; do
  dir=$(nodemedic_containerd_dir "$series")
  echo "=== containerd tests on $("$dir/containerd" --version) ===" >&2
  NODEMEDIC_TEST_CONTAINERD_DIR="$dir" cargo nextest run --locked --no-fail-fast -E "$containerd_group" \
    || failed+=("containerd $series")
done
# The Raspberry Pi OS packages (arm64, armhf): release builds with Debian's cross toolchain,
# lintian, the glibc ceiling, and a smoke test of each under qemu-user (README, "Building
# the package"; 10-16 min on 2 cores).
./scripts/cross-test.sh || failed+=("the arm64/armhf packages")
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
