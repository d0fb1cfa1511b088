#!/usr/bin/env bash
# Runs every nodemedic test, installing what the tests need first. Run as root on a
# Debian/Ubuntu machine: many tests use the real kernel (/dev/kmsg, FUSE, namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
nodemedic_install_deps
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo nextest run --locked --no-fail-fast
# The Raspberry Pi OS packages (arm64, armhf): release builds with Debian's cross toolchain,
# lintian, the glibc ceiling, and a smoke test of each under qemu-user (README, "Building
# the package"; 10-16 min on 2 cores).
./scripts/cross-test.sh
