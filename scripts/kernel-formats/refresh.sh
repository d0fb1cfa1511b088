#!/bin/bash
# Refreshes tests/fixtures/kernel-formats/<version>/ from the kernel sources Debian ships
# as packages: linux-source-6.1 (bookworm-security), -6.12 (trixie), -7.2 (sid).
#
#   scripts/kernel-formats/refresh.sh [CACHE_DIR]
#
# Downloads with `apt-get download` through a private sources list and state directory
# under CACHE_DIR (default /var/cache/nodemedic-kernel-formats; nothing is installed and
# the system's apt state is not touched), unpacks only the files extract.py reads (tar
# wildcards), and rewrites the fixtures. The .debs (~150 MB each) stay in the cache, so a
# second run downloads nothing. Needs apt-get, dpkg-deb, tar, xz and python3 (>= 3.11).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="$repo/tests/fixtures/kernel-formats"
cache=${1:-/var/cache/nodemedic-kernel-formats}
# package = suite it is taken from (the issue names these three)
versions=("6.1=bookworm-security" "6.12=trixie" "7.2=sid")
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

for tool in apt-get dpkg-deb tar xz python3; do
  command -v "$tool" >/dev/null || { echo "refresh.sh: $tool is missing" >&2; exit 1; }
done
[ -r "$keyring" ] || { echo "refresh.sh: $keyring is missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "refresh.sh: python3 >= 3.11 is needed" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$cache/lists/partial" "$cache/cache/archives/partial" "$cache/debs" "$cache/src"
cat > "$cache/sources.list" <<L
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=$keyring] http://deb.debian.org/debian trixie main
deb [signed-by=$keyring] http://deb.debian.org/debian sid main
L
# The archive's snapshot may be older than its Release files' validity window.
apt_opts=(-o "Dir::Etc::sourcelist=$cache/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache/cache"
  -o "Acquire::Check-Valid-Until=false" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update

mapfile -t patterns < <(python3 "$here/extract.py" --tar-patterns)
for vs in "${versions[@]}"; do
  v=${vs%%=*}; suite=${vs#*=}
  pkg=linux-source-$v
  pkgver=$(apt-cache "${apt_opts[@]}" madison "$pkg" | awk -F' *[|] *' -v s="$suite" '$3 ~ " "s"/" {print $2; exit}')
  [ -n "$pkgver" ] || { echo "refresh.sh: no $pkg in $suite" >&2; exit 1; }
  deb="$cache/debs/${pkg}_${pkgver}_all.deb"
  if [ ! -s "$deb" ]; then
    (cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "$pkg=$pkgver")
  fi
  src="$cache/src/$v"
  rm -rf "$src"; mkdir -p "$src"
  # The .deb holds /usr/src/linux-source-X.tar.xz: unpack only the files we read.
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$pkg.tar.xz" \
    | tar -xJ -C "$src" --wildcards --no-wildcards-match-slash --ignore-failed-read \
        "${patterns[@]/#/$pkg/}" 2>/dev/null || true
  [ -d "$src/$pkg/kernel" ] || { echo "refresh.sh: nothing unpacked from $deb" >&2; exit 1; }
  echo "== $pkg $pkgver ($suite), $(du -h "$deb" | cut -f1) .deb"
  python3 "$here/extract.py" "$src/$pkg" "$out/$v"
  python3 - "$out/$v/manifest.json" "$pkg" "$pkgver" "$suite" "$deb" <<'PY'
import hashlib, json, os, sys
path, pkg, ver, suite, deb = sys.argv[1:]
h = hashlib.sha256()
with open(deb, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
counts = {}
d = os.path.dirname(path)
for name in sorted(os.listdir(d)):
    if name.endswith(".jsonl"):
        with open(os.path.join(d, name)) as f:
            counts[name[:-6]] = sum(1 for _ in f)
with open(path, "w") as f:
    json.dump({"package": pkg, "version": ver, "suite": suite,
               "deb_sha256": h.hexdigest(), "deb_bytes": os.path.getsize(deb),
               "formats": counts}, f, indent=2)
    f.write("\n")
PY
done
echo "refreshed $out in $(( $(date +%s) - start ))s"
