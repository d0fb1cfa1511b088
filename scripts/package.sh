#!/usr/bin/env bash
# Builds the nodemedic Debian package with cargo-deb and checks it with lintian.
#
#   scripts/package.sh                 release .deb for this machine (amd64 or arm64)
#   scripts/package.sh --target aarch64-unknown-linux-gnu
#                                      cross-built arm64 .deb (Raspberry Pi OS / Ubuntu arm64;
#                                      needs gcc-aarch64-linux-gnu, see README "Building the package")
#   scripts/package.sh --quick         packages the existing debug build (`cargo build`) with
#                                      fast compression: checks the package's structure and
#                                      lintian in seconds, not a release artifact. The test
#                                      suite's package test does the same (deb_package.rs).
#
# The release profile (thin LTO, one codegen unit) takes minutes on 2 cores, so CI uses
# --quick through the test suite; build releases with the first form.
# Output: target/debian/ (or target/<triple>/debian/), path printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

quick=0
target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --target) target="$2"; shift ;;
    --target=*) target="${1#--target=}" ;;
    *) echo "usage: $0 [--quick] [--target TRIPLE]" >&2; exit 2 ;;
  esac
  shift
done

# What packaging needs, installed only if missing (root, Debian/Ubuntu).
need_apt=()
for p in lintian protobuf-compiler binutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ -n "$target" ] && [ "$target" = "aarch64-unknown-linux-gnu" ] && [ "$(uname -m)" != "aarch64" ]; then
  for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
  done
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  rustup target add aarch64-unknown-linux-gnu
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $NODEMEDIC_CARGO_DEB_VERSION" ]; then
  cargo install cargo-deb --version "$NODEMEDIC_CARGO_DEB_VERSION" --locked
fi

out_dir="target/debian"
args=()
if [ -n "$target" ]; then
  args+=(--target "$target")
  out_dir="target/$target/debian"
fi
mkdir -p "$out_dir"
if [ "$quick" = 1 ]; then
  cargo build --locked ${target:+--target "$target"}
  # cargo-deb warns that the dev profile is not for releases: that is the point here.
  deb=$(cargo deb --quiet --no-build --profile dev --fast "${args[@]}" --output "$out_dir/")
else
  deb=$(cargo deb --quiet "${args[@]}" --output "$out_dir/" -- --locked)
fi

# Errors fail the build; the one known warning (no man page yet) is printed.
lintian --fail-on error "$deb"

# The files an installation relies on.
listing=$(dpkg-deb -c "$deb")
for f in ./usr/bin/nodemedic \
         ./etc/nodemedic/config.toml \
         ./usr/lib/systemd/system/nodemedic.service \
         ./usr/lib/systemd/system/nodemedic-clean-shutdown.service \
         ./usr/lib/systemd/system/k3s.service.d/10-nodemedic-preflight.conf \
         ./usr/lib/systemd/system/k3s-agent.service.d/10-nodemedic-preflight.conf; do
  grep -q " $f\$" <<<"$listing" || { echo "missing from the package: $f" >&2; exit 1; }
done
dpkg-deb -f "$deb" Package Version Architecture >&2
echo "$deb"
