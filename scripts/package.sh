#!/usr/bin/env bash
# Builds the nodemedic Debian package with cargo-deb and checks it with lintian.
#
#   scripts/package.sh                 release .deb for this machine (amd64 or arm64)
#   scripts/package.sh --target aarch64-unknown-linux-gnu
#                                      cross-built arm64 .deb (Raspberry Pi OS 64-bit)
#   scripts/package.sh --target armv7-unknown-linux-gnueabihf
#                                      cross-built armhf .deb (Raspberry Pi OS 32-bit, Pi 2+)
#   scripts/package.sh --quick         packages the existing debug build (`cargo build`) with
#                                      fast compression: checks the package's structure and
#                                      lintian in seconds, not a release artifact. The test
#                                      suite's package test does the same (deb_package.rs).
#
# Cross builds use the rustup target when it is installed, otherwise Debian bookworm's
# toolchain, installed here with apt (scripts/cross.sh; NODEMEDIC_CROSS_TOOLCHAIN=debian
# forces it). They build in target/cross/ and their binary must pass the glibc ceiling
# check (GLIBC_2.36, Raspberry Pi OS bookworm).
#
# The release profile (fat LTO, one codegen unit) takes minutes on 2 cores.
# Output: target/debian/ (or target/cross/<triple>/debian/), path printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
. scripts/cross.sh

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
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  nodemedic_apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $NODEMEDIC_CARGO_DEB_VERSION" ]; then
  cargo install cargo-deb --version "$NODEMEDIC_CARGO_DEB_VERSION" --locked
fi

# A --target naming this machine's own architecture is a native build.
if [ -n "$target" ]; then
  nodemedic_cross_arch "$target"
  [ "$NM_DEB_ARCH" = "$(dpkg --print-architecture)" ] && cross=0 || cross=1
else
  cross=0
fi

if [ "$cross" = 1 ]; then
  [ "$quick" = 0 ] || { echo "--quick packages the host's debug build; it does not cross-build" >&2; exit 2; }
  nodemedic_cross_setup "$target"
  export CARGO_TARGET_DIR="$NODEMEDIC_CROSS_TARGET_DIR"
  out_dir="$CARGO_TARGET_DIR/$target/debian"
  mkdir -p "$out_dir"
  start=$(date +%s)
  "$NODEMEDIC_CARGO" build --release --locked --target "$target"
  echo "release build for $target ($NODEMEDIC_CROSS_TOOLCHAIN toolchain): $(( $(date +%s) - start )) s" >&2
  # cargo-deb finds the binary under CARGO_TARGET_DIR and names the architecture.
  deb=$(cargo deb --quiet --no-build --target "$target" --output "$out_dir/")
else
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
fi

# Errors fail the build; warnings are printed.
lintian --fail-on error "$deb" >&2

# The binary as shipped must start on Raspberry Pi OS bookworm / Debian 12 (glibc 2.36).
shipped=$(mktemp)
trap 'rm -f "$shipped"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/nodemedic >"$shipped"
nodemedic_glibc_ceiling "$shipped" "" "/usr/bin/nodemedic in $(basename "$deb")" >/dev/null

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
