#!/usr/bin/env bash
# Builds nodemedic and runs the daemon on this machine in observe mode (the default: it
# detects and reports, and changes nothing). Run as root. Ctrl-C stops it.
# Endpoint: http://127.0.0.1:9847/metrics, /healthz, /status
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
nodemedic_install_deps
cargo build --release --locked
exec ./target/release/nodemedic run "$@"
