#!/usr/bin/env bash
# GitHub-release-style assets from the static builds (build-static.sh) and
# the .debs (build-deb.sh): one tarball per target with the binary, the
# systemd unit, the man page, the example config, shell completions and the
# README, plus SHA256SUMS over everything. "Download and run" is one step:
#
#   tar xzf eddy-0.1.0-aarch64-unknown-linux-musl.tar.gz
#   ./eddy-0.1.0-aarch64-unknown-linux-musl/eddy serve
#
# Usage: packaging/release.sh [DIST_DIR] [OUT_DIR]
#   DIST_DIR  where build-static.sh put <target>/eddy (default target/dist)
#   OUT_DIR   where the assets go (default target/release)
# The completions come from the binary that runs here (EDDY_HOST_BIN,
# default the x86_64 one in DIST_DIR): they are the same for every target.
# Tarballs are reproducible: sorted names, owner 0, mtime of the last
# commit (SOURCE_DATE_EPOCH).
set -euo pipefail
cd "$(dirname "$0")/.."
DIST=${1:-target/dist}
OUT=${2:-target/release}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
HOST_BIN=${EDDY_HOST_BIN:-$DIST/x86_64-unknown-linux-musl/eddy}
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
die() { echo "release.sh: $*" >&2; exit 1; }

[ -x "$HOST_BIN" ] || die "no binary to generate completions with: $HOST_BIN (set EDDY_HOST_BIN)"
rm -rf "$OUT"
mkdir -p "$OUT"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

completions="$STAGE/completions"
mkdir -p "$completions"
"$HOST_BIN" completions bash > "$completions/eddy.bash"
"$HOST_BIN" completions zsh > "$completions/_eddy"
"$HOST_BIN" completions fish > "$completions/eddy.fish"

found=0
for bin in "$DIST"/*/eddy; do
  [ -f "$bin" ] || continue
  target=$(basename "$(dirname "$bin")")
  name="eddy-$VERSION-$target"
  dir="$STAGE/$name"
  mkdir -p "$dir"
  install -m 0755 "$bin" "$dir/eddy"
  install -m 0644 systemd/eddy.service packaging/eddy.1 packaging/eddy.toml README.md "$dir/"
  cp -r "$completions" "$dir/completions"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
    -C "$STAGE" -czf "$OUT/$name.tar.gz" "$name"
  echo "$OUT/$name.tar.gz"
  found=$((found + 1))
done
[ "$found" -gt 0 ] || die "no binaries in $DIST/*/eddy (run packaging/build-static.sh first)"
# The .debs build-deb.sh made, if any.
for deb in "$DIST"/eddy_*.deb; do
  [ -f "$deb" ] && cp "$deb" "$OUT/"
done
(cd "$OUT" && sha256sum -- * > SHA256SUMS && sha256sum -c --quiet SHA256SUMS)
echo "$OUT/SHA256SUMS: $(wc -l < "$OUT/SHA256SUMS") files"
