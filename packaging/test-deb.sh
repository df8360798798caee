#!/usr/bin/env bash
# Installs, upgrades, removes and purges the eddy .deb in a throwaway Debian
# root (mmdebstrap + chroot), checking at each step what a Debian admin
# expects: system user, conffile kept across upgrade and remove, data kept
# on remove and deleted on purge, unit enabled and then cleaned up. It also
# runs the installed eddy as the eddy user from the installed config, with
# the unit's umask (0077), checks the modes of what it creates (the dev CA
# readable for group eddy, keys and records private), produces a record as
# an operator in group eddy with `--ca /var/lib/eddy/tls/ca.pem` (as
# README.md tells), and checks the record survives the upgrade.
#
#   packaging/test-deb.sh OLD.deb NEW.deb
#
# A foreign-architecture package (arm64, armhf on an amd64 host) is
# installed with dpkg's multiarch support, and its binary runs in the root
# under qemu-user-static (/usr/bin/qemu-aarch64-static, qemu-arm-static,
# copied into the root; there is no binfmt_misc here): missing, the test
# fails. Needs mmdebstrap and root. Environment: EDDY_DEBIAN_MIRROR
# (default http://deb.debian.org/debian).
set -euo pipefail
OLD=$(realpath "${1:?usage: $0 OLD.deb NEW.deb}")
NEW=$(realpath "${2:?usage: $0 OLD.deb NEW.deb}")
MIRROR=${EDDY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ARCH=$(dpkg-deb -f "$NEW" Architecture)
NATIVE=false
[ "$ARCH" = "$(dpkg --print-architecture)" ] && NATIVE=true
# How the installed binary is run inside the root: directly, or under qemu.
EDDY=(/usr/bin/eddy)
if ! $NATIVE; then
  case "$ARCH" in
    arm64) QEMU=qemu-aarch64-static ;;
    armhf) QEMU=qemu-arm-static ;;
    *) echo "DEB TEST FAILED ($ARCH): no qemu-user emulator known for $ARCH" >&2; exit 1 ;;
  esac
  command -v "$QEMU" >/dev/null ||
    { echo "DEB TEST FAILED ($ARCH): $QEMU not found: apt-get install qemu-user-static" >&2; exit 1; }
  EDDY=("/usr/local/libexec/$QEMU" /usr/bin/eddy)
fi

ROOT=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill -KILL "$SERVER" 2>/dev/null || true; fi
  umount "$ROOT/proc" 2>/dev/null || true
  rm -rf "$ROOT"
}
trap cleanup EXIT
fail() { echo "DEB TEST FAILED ($ARCH): $*" >&2; exit 1; }
in_root() { chroot "$ROOT" "$@"; }
check() { local what=$1; shift; "$@" || fail "$what"; echo "  ok: $what"; }

echo "== building a Debian root in $ROOT"
# systemd, procps (/bin/kill) and man-db let systemd-analyze verify the unit.
mmdebstrap --quiet --variant=apt --include=adduser,systemd,procps,man-db bookworm "$ROOT" "$MIRROR"
mount -t proc proc "$ROOT/proc"
if ! $NATIVE; then
  in_root dpkg --add-architecture "$ARCH"
  mkdir -p "$ROOT/usr/local/libexec"
  install -m 0755 "$(command -v "$QEMU")" "$ROOT/usr/local/libexec/$QEMU"
fi
cp "$OLD" "$ROOT/tmp/old.deb"
cp "$NEW" "$ROOT/tmp/new.deb"
# Two ordinary users: "member", an operator who will be in group eddy, and
# "outsider", who is not.
in_root adduser --quiet --disabled-password --gecos "" member >/dev/null
in_root adduser --quiet --disabled-password --gecos "" outsider >/dev/null
# Runs a command in the root as user $1 with the groups the root's
# database gives it (numeric: chroot would resolve names on the host).
as_user() {
  local user=$1; shift
  chroot --userspec="$(in_root id -u "$user"):$(in_root id -g "$user")" \
    --groups="$(in_root id -G "$user" | tr ' ' ,)" "$ROOT" "$@"
}

# Runs the installed server as the eddy user with the unit's umask,
# produces or consumes one record as the operator, and stops the server
# with SIGTERM (exit status 0 expected).
run_server() {
  local action=$1 log="$ROOT/tmp/serve.log"
  : > "$log"
  (umask 0077; exec chroot --userspec="$(in_root id -u eddy):$(in_root id -g eddy)" "$ROOT" "${EDDY[@]}" serve \
    --config /etc/eddy/eddy.toml --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0) 2> "$log" &
  SERVER=$!
  local deadline=$((SECONDS + 60))
  until grep -q "metrics on http://" "$log"; do
    [ $SECONDS -lt $deadline ] || { cat "$log"; fail "the installed eddy did not start"; }
    kill -0 "$SERVER" 2>/dev/null || { cat "$log"; fail "the installed eddy exited"; }
    sleep 0.1
  done
  local addr
  addr=$(sed -n 's/.*listening on \([0-9.:]*\) .*/\1/p' "$log" | head -1)
  if [ "$action" = produce ]; then
    echo "kept across upgrades" | as_user member "${EDDY[@]}" produce \
      --topic deb --server "$addr" --ca /var/lib/eddy/tls/ca.pem \
      || fail "produce to the installed eddy as an operator in group eddy"
  else
    [ "$(as_user member "${EDDY[@]}" consume --topic deb --from-beginning \
         --server "$addr" --ca /var/lib/eddy/tls/ca.pem)" = "kept across upgrades" ] \
      || fail "the record stored before the upgrade is gone"
  fi
  kill -TERM "$SERVER"
  local rc=0
  wait "$SERVER" || rc=$?
  SERVER=""
  [ "$rc" -eq 0 ] || { cat "$log"; fail "exit status $rc after SIGTERM"; }
}

echo "== install $(basename "$OLD")"
in_root dpkg -i /tmp/old.deb
# What README.md tells an operator who runs client commands on the gateway.
in_root adduser --quiet member eddy
system_user() {
  in_root getent passwd eddy | grep -Eq '^eddy:x:[0-9]{3}:[0-9]+::/var/lib/eddy:/usr/sbin/nologin$'
}
is_conffile() { in_root dpkg-query -W -f='${Conffiles}' eddy | grep -q ' /etc/eddy/eddy.toml '; }
check "system user eddy (no login shell, home /var/lib/eddy)" system_user
check "binary /usr/bin/eddy" test -x "$ROOT/usr/bin/eddy"
check "/etc/eddy/eddy.toml is a conffile" is_conffile
check "/var/lib/eddy owned by eddy, mode 750" \
  test "$(in_root stat -c '%U:%G %a' /var/lib/eddy)" = "eddy:eddy 750"
check "unit installed" test -f "$ROOT/lib/systemd/system/eddy.service"
check "unit enabled" test -L "$ROOT/etc/systemd/system/multi-user.target.wants/eddy.service"
check "man page" test -f "$ROOT/usr/share/man/man1/eddy.1.gz"
check "bash completion" test -s "$ROOT/usr/share/bash-completion/completions/eddy"
check "zsh completion" test -s "$ROOT/usr/share/zsh/vendor-completions/_eddy"
check "fish completion" test -s "$ROOT/usr/share/fish/vendor_completions.d/eddy.fish"
check "systemd-analyze verify passes" in_root systemd-analyze verify /lib/systemd/system/eddy.service
exposure() {
  local line
  line=$(in_root systemd-analyze security --offline=true /lib/systemd/system/eddy.service | tail -1)
  echo "  $line"
  # "→ Overall exposure level for eddy.service: 1.2 OK"; 0 is best, 10 worst.
  awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) { v = $i; found = 1 } }
       END { exit !(found && v <= 2.0) }' <<< "$line"
}
check "systemd-analyze security: exposure at most 2.0" exposure
check "installed config is valid" in_root "${EDDY[@]}" config check /etc/eddy/eddy.toml
run_server produce
echo "  ok: runs as eddy from the installed config (umask 0077), stores a record an operator in group eddy sent with --ca /var/lib/eddy/tls/ca.pem, stops cleanly"
mode_of() { in_root stat -c '%U:%G %a' "$1"; }
check "dev CA directory: eddy:eddy 755" test "$(mode_of /var/lib/eddy/tls)" = "eddy:eddy 755"
check "dev CA certificate: eddy:eddy 644" test "$(mode_of /var/lib/eddy/tls/ca.pem)" = "eddy:eddy 644"
check "dev CA key: eddy:eddy 600" test "$(mode_of /var/lib/eddy/tls/ca.key)" = "eddy:eddy 600"
check "server key: eddy:eddy 600" test "$(mode_of /var/lib/eddy/tls/server.key)" = "eddy:eddy 600"
# Group eddy reaches the CA, not the records; others reach neither.
records_private() {
  local open
  open=$(in_root find /var/lib/eddy -path /var/lib/eddy/tls -prune -o -type f -perm /077 -print)
  [ -z "$open" ] || { echo "  readable beyond eddy: $open"; return 1; }
  in_root find /var/lib/eddy -path /var/lib/eddy/tls -prune -o -type f -print | grep -q .
}
check "stored records are private to eddy (no group or other bits)" records_private
member_reads_ca() { as_user member cat /var/lib/eddy/tls/ca.pem | grep -q 'BEGIN CERTIFICATE'; }
outsider_reads_nothing() {
  ! as_user outsider cat /var/lib/eddy/tls/ca.pem >/dev/null 2>&1 &&
    ! as_user outsider ls /var/lib/eddy >/dev/null 2>&1
}
check "a member of group eddy reads the dev CA" member_reads_ca
check "a user outside group eddy reads neither the CA nor the data directory" outsider_reads_nothing

echo "== edit the conffile, upgrade to $(basename "$NEW")"
sed -i 's/^# threads = 0$/threads = 1/' "$ROOT/etc/eddy/eddy.toml"
grep -qx 'threads = 1' "$ROOT/etc/eddy/eddy.toml" || fail "could not edit the conffile"
in_root dpkg -i /tmp/new.deb < /dev/null
check "new version installed" \
  test "$(in_root dpkg-query -W -f='${Version}' eddy)" = "$(dpkg-deb -f "$NEW" Version)"
check "admin's edit of the conffile kept" grep -qx 'threads = 1' "$ROOT/etc/eddy/eddy.toml"
run_server consume
echo "  ok: the record stored before the upgrade is still there"

echo "== remove"
in_root dpkg -r eddy
check "binary gone" test ! -e "$ROOT/usr/bin/eddy"
check "conffile kept" grep -qx 'threads = 1' "$ROOT/etc/eddy/eddy.toml"
check "data kept" test -d "$ROOT/var/lib/eddy"
check "package in state rc" \
  test "$(in_root dpkg-query -W -f='${db:Status-Abbrev}' eddy)" = "rc "

echo "== purge"
in_root dpkg -P eddy
check "conffile gone" test ! -e "$ROOT/etc/eddy/eddy.toml"
check "data gone" test ! -e "$ROOT/var/lib/eddy"
check "unit no longer enabled" test ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/eddy.service"
check "system user kept (Debian policy)" in_root getent passwd eddy

echo "== reinstall after purge"
in_root dpkg -i /tmp/new.deb
check "data directory recreated for eddy" \
  test "$(in_root stat -c '%U:%G %a' /var/lib/eddy)" = "eddy:eddy 750"
echo "deb lifecycle test passed ($ARCH)"
