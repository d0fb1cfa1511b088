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
