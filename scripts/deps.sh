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
#   qemu-user curl               the arm64/armhf smoke test (scripts/smoke-qemu.sh) runs the
#                                cross-built binary under qemu and fetches its /metrics
#   dbus                         the D-Bus system bus inside the nspawn containers (systemd's
#                                and logind's APIs: the k3s unit state, inhibitors, the logind
#                                reboot) and a private bus for the D-Bus edge's unit test
# The cross toolchain itself (rustc-web cargo-web libstd-rust-web-dev:<arch> gcc-<triplet>
# libc6-dev-<arch>-cross, after dpkg --add-architecture) is installed by scripts/cross.sh,
# called by scripts/package.sh --target, so that package.sh also works on its own.
NODEMEDIC_APT_PACKAGES="protobuf-compiler containerd runc containernetworking-plugins iptables busybox-static gcc iproute2 util-linux ca-certificates systemd-container prometheus lintian qemu-user curl dbus"

# cargo-deb builds the .deb (tests and scripts/package.sh); pinned so packages are reproducible.
NODEMEDIC_CARGO_DEB_VERSION="3.8.0"

nodemedic_install_deps() {
  local missing=()
  for p in $NODEMEDIC_APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The distro services are not wanted: tests start private instances.
  systemctl disable --now containerd prometheus >/dev/null 2>&1 || true
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
}
