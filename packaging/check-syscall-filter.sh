#!/usr/bin/env bash
# Checks the seccomp filter of systemd/eddy.service against what eddy really
# calls: runs BINARY under strace through a workload (serve, durable and
# fire-and-forget produce, consume, topic create/delete, a short load, a
# metrics scrape, SIGHUP reload, SIGTERM stop) and fails if any system call
# it made is outside the unit's SystemCallFilter= lines, with the groups
# expanded by this machine's systemd-analyze. Under that filter a missing
# call would fail with EPERM (SystemCallErrorNumber=) in production.
#
#   packaging/check-syscall-filter.sh BINARY       (host architecture)
#
# Needs strace, python3 and systemd-analyze. The server listens on 127.0.0.1
# port 0.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:?usage: $0 BINARY}")
UNIT=systemd/eddy.service
WORK=$(mktemp -d)
STRACE=""
trap '[ -n "$STRACE" ] && kill -KILL "$STRACE" 2>/dev/null; rm -rf "$WORK"' EXIT
fail() { echo "SYSCALL CHECK FAILED: $*" >&2; cat "$WORK/serve.log" >&2 || true; exit 1; }

strace -f -qq -o "$WORK/trace" "$BIN" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --data-dir "$WORK/data" 2> "$WORK/serve.log" &
STRACE=$!
deadline=$((SECONDS + 120))
until grep -q "metrics on http://" "$WORK/serve.log"; do
  [ $SECONDS -lt $deadline ] || fail "eddy did not start under strace"
  sleep 0.1
done
SERVER=$(pgrep -P "$STRACE")
ADDR=$(sed -n 's/.*listening on \([0-9.:]*\) .*/\1/p' "$WORK/serve.log" | head -1)
METRICS=$(sed -n 's#.*metrics on http://\([0-9.:]*\)/metrics.*#\1#p' "$WORK/serve.log" | head -1)
client=(--server "$ADDR" --ca "$WORK/data/tls/ca.pem")

seq 1 1000 | "$BIN" produce --topic s --batch 10 "${client[@]}" || fail "produce"
seq 1 10 | "$BIN" produce --topic s --acks received "${client[@]}" || fail "produce received"
"$BIN" consume --topic s --from-beginning "${client[@]}" > /dev/null || fail "consume"
"$BIN" topics create t2 --partitions 3 "${client[@]}" > /dev/null || fail "create"
"$BIN" topics delete t2 "${client[@]}" > /dev/null || fail "delete"
"$BIN" bench produce --connections 4 --batch 100 --record-bytes 100 --records 20000 \
  "${client[@]}" > /dev/null || fail "bench"
exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS##*:}"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -q "eddy_records_in_total" <&3 || fail "metrics scrape"
exec 3<&-
kill -HUP "$SERVER"
until grep -q "tls reloaded" "$WORK/serve.log"; do sleep 0.1; done
kill -TERM "$SERVER"
wait "$STRACE" || true
STRACE=""
grep -q "stopped cleanly" "$WORK/serve.log" || fail "eddy did not stop cleanly"

systemd-analyze syscall-filter > "$WORK/groups"
python3 - "$UNIT" "$WORK/groups" "$WORK/trace" <<'PY'
import re, sys
unit, groups_file, trace = sys.argv[1:]
groups, current = {}, None
for raw in open(groups_file):
    line = raw.strip()
    if raw.startswith("@"):
        # A group header; its members follow, indented.
        current = line.split()[0]
        groups[current] = []
    elif current and line and not line.startswith("#"):
        groups[current].append(line)

def expand(names, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for n in names:
        if n.startswith("@"):
            if n not in seen:
                seen.add(n)
                out |= expand(groups[n], seen)
        else:
            out.add(n)
    return out

allowed, denied = set(), set()
for line in open(unit):
    if line.startswith("SystemCallFilter="):
        value = line.split("=", 1)[1].split()
        if value[0].startswith("~"):
            denied |= expand([value[0][1:]] + value[1:])
        else:
            allowed |= expand(value)
permitted = allowed - denied
# The first execve is strace starting eddy, before the filter would apply.
used = set(re.findall(r"^\d+\s+([a-z0-9_]+)\(", open(trace).read(), re.M)) - {"execve"}
outside = sorted(used - permitted)
print(f"{len(used)} distinct system calls; outside the unit's filter: {outside or 'none'}")
sys.exit(1 if outside else 0)
PY
