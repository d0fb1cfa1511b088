# Sourced by the scripts: installs what building and testing nodemedic needs on a fresh
# Debian/Ubuntu machine, as root. Idempotent: installs only what is missing.

# Debian packages the build and tests use, and why:
#   protobuf-compiler            protoc, for the gRPC code of containerd-client and k8s-cri
#   containerd runc containernetworking-plugins iptables
#                                a real, private containerd with CRI and CNI for the preflight tests
#   busybox-static               the test containers' image content
#   gcc                          builds the static pause binary of the test sandbox image
#                                and the memory tests' workloads (thrashing, and pods holding memory)
#                                (mkswap/swapon from util-linux)
#   iproute2 util-linux          network namespaces (ip, nsenter) for the private containerd
#   systemd-container            systemd-nspawn: the packaged units under a real systemd
#                                (upgrades systemd in place; fine on a CI machine)
#   prometheus                   promtool: check and unit-test the alerting rules, lint a scrape
#   lintian                      the Debian package must pass it without errors
#   e2fsprogs xfsprogs           real ext4/XFS errors, read-only remounts and shutdowns on loop
#                                devices for the storage tests (mkfs, debugfs, xfs_io)
#   qemu-user curl               the arm64/armhf smoke test (scripts/smoke-qemu.sh) runs the
#                                cross-built binary under qemu and fetches its /metrics
#   dbus                         the D-Bus system bus inside the nspawn containers (systemd's
#                                and logind's APIs: the k3s unit state, inhibitors, the logind
#                                reboot) and a private bus for the D-Bus edge's unit test
#   systemd-journal-remote       writes the previous boot's kernel lines into a real journal file
#                                for the previous-boot tests (read back by the real journalctl)
#   sqlite3                      the datastore tests build kine-shaped databases with it
# The cross toolchain itself (rustc-web cargo-web libstd-rust-web-dev:<arch> gcc-<triplet>
# libc6-dev-<arch>-cross, after dpkg --add-architecture) is installed by scripts/cross.sh,
# called by scripts/package.sh --target, so that package.sh also works on its own.
# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

NODEMEDIC_APT_PACKAGES="protobuf-compiler containerd runc containernetworking-plugins iptables busybox-static gcc iproute2 util-linux ca-certificates systemd-container prometheus lintian qemu-user curl systemd-journal-remote sqlite3 e2fsprogs xfsprogs dbus"

# cargo-deb builds the .deb (tests and scripts/package.sh); pinned so packages are reproducible.
NODEMEDIC_CARGO_DEB_VERSION="3.8.0"

# containerd 1.7 (Debian trixie) and 2.x (sid) for the test matrix (issue 16): every k3s line
# since March 2025 bundles 2.x, older ones 1.7; bookworm installs 1.6. They are fetched with
# `apt-get download` and unpacked with `dpkg -x` into NODEMEDIC_CTD_CACHE, never installed
# (bookworm's runc stays: sid's runc needs glibc 2.38). A private apt list with
# Acquire::Check-Valid-Until=false, since the archive's snapshot can be older than its
# Release file's validity. Entries: <series>:<suite>:<preferred exact version>. When the suite
# no longer carries the exact version (a point release replaced it, sid moved on), the newest
# version of the same series in that suite is taken and named; none at all is an error.
NODEMEDIC_CTD_CACHE="${NODEMEDIC_CTD_CACHE:-/var/cache/nodemedic-ctd}"
NODEMEDIC_CTD_MATRIX="${NODEMEDIC_CTD_MATRIX:-1.7:trixie:1.7.24~ds1-6+deb13u1 2:sid:2.1.9+ds1-5}"

# Prints the bin dir of containerd <series> (1.6 is bookworm's own /usr/bin).
nodemedic_containerd_dir() {
  case "$1" in
    1.6) echo /usr/bin ;;
    *) echo "$NODEMEDIC_CTD_CACHE/$1/usr/bin" ;;
  esac
}

nodemedic_fetch_containerd() {
  local w="$NODEMEDIC_CTD_CACHE" entry series suite want need=()
  for entry in $NODEMEDIC_CTD_MATRIX; do
    series="${entry%%:*}"
    # Idempotent: an unpacked, runnable copy is kept.
    if [ -f "$w/$series/.version" ] && "$w/$series/usr/bin/containerd" --version >/dev/null 2>&1; then
      continue
    fi
    need+=("$entry")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  mkdir -p "$w/lists/partial" "$w/cache/archives/partial" "$w/debs"
  cat >"$w/sources.list" <<L
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
L
  local a=(-o "Dir::Etc::sourcelist=$w/sources.list" -o Dir::Etc::sourceparts=- \
    -o "Dir::State::Lists=$w/lists" -o "Dir::Cache=$w/cache" -o Acquire::Check-Valid-Until=false \
    -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
  nodemedic_apt_update "${a[@]}"
  for entry in "${need[@]}"; do
    IFS=: read -r series suite want <<<"$entry"
    # madison: "containerd | <version> | <url> <suite>/main <arch> Packages", newest first.
    local offered version
    offered=$(apt-cache "${a[@]}" madison containerd | awk -F' [|] ' -v s=" $suite/" 'index($3, s) { print $2 }')
    if printf '%s\n' "$offered" | grep -qxF "$want"; then
      version="$want"
    else
      version=$(printf '%s\n' "$offered" | grep -E "^${series//./\\.}[.]" | head -n1)
      if [ -z "$version" ]; then
        echo "Debian $suite no longer offers containerd $series (it offers: ${offered:-nothing});" \
          "update NODEMEDIC_CTD_MATRIX in scripts/deps.sh" >&2
        return 1
      fi
      echo "containerd $want is gone from Debian $suite: using $version, the newest $series there" >&2
    fi
    rm -rf "$w/$series" && mkdir -p "$w/$series"
    (cd "$w/debs" && apt-get "${a[@]}" download -qq "containerd=$version") 2>/dev/null || {
      echo "apt-get download containerd=$version ($suite) failed" >&2
      return 1
    }
    dpkg -x "$w/debs/containerd_${version#*:}_$(dpkg --print-architecture).deb" "$w/$series"
    if ! "$w/$series/usr/bin/containerd" --version >/dev/null 2>&1; then
      echo "containerd $version from $suite does not run on this machine:" >&2
      "$w/$series/usr/bin/containerd" --version >&2 || true
      echo "(a newer glibc?) pin a runnable version in NODEMEDIC_CTD_MATRIX" >&2
      return 1
    fi
    echo "$version ($suite)" >"$w/$series/.version"
    echo "containerd $series: $version from Debian $suite in $w/$series" >&2
  done
}

nodemedic_install_deps() {
  local missing=()
  for p in $NODEMEDIC_APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    nodemedic_apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The distro services are not wanted: tests start private instances.
  systemctl disable --now containerd prometheus systemd-journal-remote.socket >/dev/null 2>&1 || true
  if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    return 1
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
  fi
  if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $NODEMEDIC_CARGO_DEB_VERSION" ]; then
    cargo install cargo-deb --version "$NODEMEDIC_CARGO_DEB_VERSION" --locked
  fi
  nodemedic_fetch_containerd
}
