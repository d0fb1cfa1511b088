# Sourced by the scripts: installs what building and testing nodemedic needs on a fresh
# Debian/Ubuntu machine, as root. Idempotent: installs only what is missing.

# Debian packages the tests use, and why:
#   protobuf-compiler            protoc, for the gRPC code of containerd-client and k8s-cri
#   containerd runc containernetworking-plugins iptables
#                                a real, private containerd with CRI and CNI for the sandbox tests
#   busybox-static               a static init for test containers
#   prometheus                   promtool: metrics lint and alert-rule tests
#   systemd-container            systemd-nspawn: real systemd as PID 1 for the unit tests
#   iproute2                     network namespaces for containerd
#   gzip                         /proc/config.gz HZ lookup fixture
NODEMEDIC_APT_PACKAGES="protobuf-compiler containerd runc containernetworking-plugins iptables busybox-static prometheus systemd-container iproute2 gzip ca-certificates"

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
  systemctl disable --now containerd >/dev/null 2>&1 || true
  if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    return 1
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
  fi
}
