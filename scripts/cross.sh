# Sourced by scripts/package.sh and scripts/cross-test.sh: the toolchain for the Raspberry
# Pi OS packages (arm64, and armhf for 32-bit Pi OS), and the glibc ceiling they must keep.
#
# Toolchain: the rustup target when it is already installed; otherwise Debian bookworm's
# own cross toolchain (rustc-web/cargo-web from bookworm-security, whose libstd-rust-web-dev
# is Multi-Arch: same), installed with apt. rustup's download server is not reachable from
# CI, so this never calls `rustup target add`.

# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# Raspberry Pi OS bookworm ships glibc 2.36 (Debian 12). A binary needing a newer symbol
# version does not start there ("version `GLIBC_2.39' not found"): a sid toolchain gives that.
NODEMEDIC_GLIBC_CEILING="2.36"

# Cross builds use their own target directory: they never invalidate or lock the x86_64
# test build in target/, and cargo-deb's strip temp files cannot collide with the tests'.
NODEMEDIC_CROSS_TARGET_DIR="target/cross"

# nodemedic_cross_arch TRIPLE: sets NM_DEB_ARCH (Debian architecture), NM_GNU (the GNU
# triplet of gcc and of /usr/<triplet>, qemu's -L) and NM_QEMU (the qemu-user binary).
nodemedic_cross_arch() {
  case "$1" in
    aarch64-unknown-linux-gnu) NM_DEB_ARCH=arm64 NM_GNU=aarch64-linux-gnu NM_QEMU=qemu-aarch64 ;;
    armv7-unknown-linux-gnueabihf) NM_DEB_ARCH=armhf NM_GNU=arm-linux-gnueabihf NM_QEMU=qemu-arm ;;
    x86_64-unknown-linux-gnu) NM_DEB_ARCH=amd64 NM_GNU=x86_64-linux-gnu NM_QEMU="" ;;
    *)
      echo "unsupported target '$1': use aarch64-unknown-linux-gnu (arm64) or armv7-unknown-linux-gnueabihf (armhf)" >&2
      return 2
      ;;
  esac
}

# Installs the Debian packages given, only those missing (root, Debian/Ubuntu).
nodemedic_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  nodemedic_apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
}

# nodemedic_add_arch ARCH: makes ARCH's packages installable (dpkg --add-architecture),
# for the target's libraries (libstd-rust-web-dev:<arch>).
nodemedic_add_arch() {
  [ "$1" = amd64 ] && return 0
  if ! dpkg --print-foreign-architectures | grep -qx "$1"; then
    echo "adding Debian architecture $1 (dpkg --add-architecture)" >&2
    dpkg --add-architecture "$1"
    # The new architecture's package lists are needed even if nothing else is missing.
    nodemedic_apt_update
  fi
}

# nodemedic_cross_setup TRIPLE: installs what building for TRIPLE needs and exports the
# cargo to use (NODEMEDIC_CARGO) with the linker and C compiler for the target (ring
# compiles C). NODEMEDIC_CROSS_TOOLCHAIN=debian forces Debian's toolchain even where the
# rustup target is installed; after the call it says which one is used (rustup|debian).
nodemedic_cross_setup() {
  local triple="$1"
  nodemedic_cross_arch "$triple" || return
  local want="${NODEMEDIC_CROSS_TOOLCHAIN:-auto}"
  case "$want" in
    auto | rustup | debian) ;;
    *) echo "NODEMEDIC_CROSS_TOOLCHAIN='$want': use auto, rustup or debian" >&2; return 2 ;;
  esac
  if [ "$want" != debian ] && command -v rustup >/dev/null \
     && rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    NODEMEDIC_CROSS_TOOLCHAIN=rustup
    NODEMEDIC_CARGO=cargo
    nodemedic_add_arch "$NM_DEB_ARCH" || return
    nodemedic_apt_install "gcc-$NM_GNU" "libc6-dev-$NM_DEB_ARCH-cross" || return
  elif [ "$want" = rustup ]; then
    echo "the rustup target $triple is not installed (rustup target add $triple), or use NODEMEDIC_CROSS_TOOLCHAIN=debian" >&2
    return 1
  else
    NODEMEDIC_CROSS_TOOLCHAIN=debian
    nodemedic_add_arch "$NM_DEB_ARCH" || return
    nodemedic_apt_install rustc-web cargo-web "libstd-rust-web-dev:$NM_DEB_ARCH" \
      "gcc-$NM_GNU" "libc6-dev-$NM_DEB_ARCH-cross" || return
    # rustup's proxies usually come first in PATH: name Debian's rustc explicitly, or
    # /usr/bin/cargo would build with rustup's rustc and find no std for the target.
    NODEMEDIC_CARGO=/usr/bin/cargo
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  fi
  local up="${triple^^}"
  up="${up//-/_}"
  # The C compiler also builds the bundled SQLite (rusqlite's `bundled`) for the target.
  export "CARGO_TARGET_${up}_LINKER=$NM_GNU-gcc"
  export "CC_${triple//-/_}=$NM_GNU-gcc" "AR_${triple//-/_}=$NM_GNU-ar"
  export NODEMEDIC_CARGO NODEMEDIC_CROSS_TOOLCHAIN
  echo "toolchain for $triple: $NODEMEDIC_CROSS_TOOLCHAIN ($("$NODEMEDIC_CARGO" --version), $(${RUSTC:-rustc} --version))" >&2
}

# nodemedic_cross_unobtainable TRIPLE: succeeds, printing why, when Debian's toolchain for
# TRIPLE cannot be installed from the apt lists this machine has: the target's
# libstd-rust-web-dev must be the exact version of rustc-web (Multi-Arch: same), and both
# come from bookworm-security, whose index for the target's architecture a mirror in the
# middle of a sync serves with the wrong size (apt-get update then drops it, and only
# bookworm's older libstd is offered). Fails (nothing to report) otherwise, and always
# with a rustup target installed.
nodemedic_cross_unobtainable() {
  nodemedic_cross_arch "$1" || return 1
  if [ "${NODEMEDIC_CROSS_TOOLCHAIN:-auto}" != debian ] && command -v rustup >/dev/null \
     && rustup target list --installed 2>/dev/null | grep -qx "$1"; then
    return 1
  fi
  nodemedic_add_arch "$NM_DEB_ARCH" || return 1
  local rv lv
  rv=$(apt-cache policy rustc-web 2>/dev/null | sed -n 's/^  Candidate: //p')
  lv=$(apt-cache policy "libstd-rust-web-dev:$NM_DEB_ARCH" 2>/dev/null | sed -n 's/^  Candidate: //p')
  [ -n "$rv" ] && [ "$rv" != "(none)" ] && [ "$rv" != "$lv" ] || return 1
  echo "Debian's rustc-web is $rv but the apt lists offer libstd-rust-web-dev:$NM_DEB_ARCH ${lv:-(none)}: the mirror's bookworm-security index for $NM_DEB_ARCH could not be fetched (see apt-get update above); nothing else can build for $1 here"
}

# nodemedic_glibc_ceiling BINARY [MAX [NAME]]: reads the glibc symbol versions BINARY
# needs (readelf, the .gnu.version_r section) and fails if any is newer than MAX (default
# NODEMEDIC_GLIBC_CEILING). Prints the highest version needed. NAME names it in messages.
nodemedic_glibc_ceiling() {
  local bin="$1" max="${2:-$NODEMEDIC_GLIBC_CEILING}" needed highest over
  local name="${3:-$1}"
  [ -f "$bin" ] || { echo "glibc check: no such file: $bin" >&2; return 1; }
  # "Name: GLIBC_2.34  Flags: none  Version: 5" lines of the version-needs section.
  needed=$(readelf --version-info --wide "$bin" \
    | sed -n 's/.*Name: GLIBC_\([0-9][0-9.]*\) .*/\1/p' | sort -uV) || return 1
  if [ -z "$needed" ]; then
    echo "glibc check: $name needs no versioned glibc symbol: not a dynamically linked glibc binary?" >&2
    return 1
  fi
  highest=$(tail -n1 <<<"$needed")
  over=$(printf '%s\n' "$needed" | while read -r v; do
    [ "$(printf '%s\n%s\n' "$v" "$max" | sort -V | tail -n1)" = "$max" ] || echo "GLIBC_$v"
  done)
  if [ -n "$over" ]; then
    echo "glibc check FAILED: $name needs $(echo $over) (newer than the ceiling GLIBC_$max; Raspberry Pi OS bookworm has 2.36); build with Debian bookworm's toolchain (scripts/package.sh), not a newer one" >&2
    return 1
  fi
  echo "glibc check: $name needs at most GLIBC_$highest (ceiling GLIBC_$max)" >&2
  echo "GLIBC_$highest"
}
