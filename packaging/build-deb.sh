#!/usr/bin/env bash
# Builds the eddy .deb for one Debian architecture from the static binary
# that packaging/build-static.sh made, with debhelper (the systemd unit's
# maintainer-script snippets, conffiles, man page, changelog as Debian does
# them), then runs lintian on it.
#
#   packaging/build-deb.sh amd64|arm64|armhf
#
# Environment: EDDY_DEB_REVISION (default 1) is the Debian revision, so an
# upgrade can be tested with a second build. EDDY_HOST_BIN (default the
# x86_64 static build) is the binary that runs here to write the shell
# completions, which are the same for every architecture. Writes
# target/dist/eddy_<version>-<revision>_<arch>.deb. Needs debhelper, lintian.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ARCH=${1:?usage: $0 amd64|arm64|armhf}
case "$ARCH" in
  amd64) TARGET=x86_64-unknown-linux-musl ;;
  arm64) TARGET=aarch64-unknown-linux-musl ;;
  armhf) TARGET=armv7-unknown-linux-gnueabihf ;;
  *) echo "build-deb: unknown architecture $ARCH (amd64, arm64, armhf)" >&2; exit 1 ;;
esac
BIN=target/dist/$TARGET/eddy
[ -x "$BIN" ] || { echo "build-deb: $BIN missing: run packaging/build-static.sh $TARGET" >&2; exit 1; }
command -v dh >/dev/null || { echo "build-deb: apt-get install debhelper" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
REVISION=${EDDY_DEB_REVISION:-1}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
SRC=$STAGE/eddy-$VERSION
mkdir -p "$SRC"
cp -r packaging/debian "$SRC/debian"
cp "$BIN" "$SRC/eddy"
cp packaging/eddy.toml packaging/eddy.1 README.md "$SRC/"
cp systemd/eddy.service "$SRC/debian/eddy.service"

# Shell completions, named and placed where bash-completion, zsh and fish
# look for a package's own (debian/eddy.install copies these folders).
HOST_BIN=${EDDY_HOST_BIN:-target/dist/x86_64-unknown-linux-musl/eddy}
[ -x "$HOST_BIN" ] || { echo "build-deb: no binary to write completions with: $HOST_BIN (set EDDY_HOST_BIN)" >&2; exit 1; }
mkdir -p "$SRC/completions/bash" "$SRC/completions/zsh" "$SRC/completions/fish"
"$HOST_BIN" completions bash > "$SRC/completions/bash/eddy"
"$HOST_BIN" completions zsh > "$SRC/completions/zsh/_eddy"
"$HOST_BIN" completions fish > "$SRC/completions/fish/eddy.fish"

# The crates linked into the binary, with their licenses.
crates=$(cargo tree --locked -e normal,no-proc-macro --target "$TARGET" --prefix none \
           --format '{p} {l}' | sed 's/ (\*)$//' | grep -v '^eddy ' | sort -u | sed 's/^/  /')
awk -v crates="$crates" '{ if ($0 == "@CRATES@") print crates; else print }' \
  packaging/debian/copyright.in > "$SRC/debian/copyright"
rm "$SRC/debian/copyright.in"

# A changelog entry for this build (dpkg takes the version from it).
{
  echo "eddy ($VERSION-$REVISION) unstable; urgency=medium"
  echo
  echo "  * Package of eddy $VERSION, built from the eddy source tree."
  echo
  echo " -- eddy maintainers <maintainers@users.noreply.h-seed-d80b2b3f.example>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} > "$SRC/debian/changelog"

(cd "$SRC" && dpkg-buildpackage --build=binary --host-arch="$ARCH" --no-check-builddeps \
   --no-sign --no-pre-clean > "$STAGE/build.log" 2>&1) || { cat "$STAGE/build.log" >&2; exit 1; }
DEB=eddy_${VERSION}-${REVISION}_${ARCH}.deb
mkdir -p target/dist
cp "$STAGE/$DEB" "target/dist/$DEB"
echo "target/dist/$DEB: $(stat -c %s "target/dist/$DEB") bytes"

if command -v lintian >/dev/null; then
  # Tags we accept, each with its reason, live in
  # packaging/debian/eddy.lintian-overrides (dh_lintian installs them).
  lintian --fail-on error,warning --info "target/dist/$DEB"
  echo "lintian: clean (errors and warnings)"
else
  echo "build-deb: lintian not installed; the package was not checked" >&2
  exit 1
fi
