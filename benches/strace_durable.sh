#!/usr/bin/env bash
# Proves against the kernel that `acks=durable` waits for a real fsync:
# runs `eddy serve` under strace, sends one durable produce, and checks that
# an fdatasync/fsync of sled's log file (<data>/log/db) completed after the
# request was read from the socket and before the answer was written to it.
# Also checks that the directories sled's files live in (<data>/log and
# <data>) are fsynced at start. Exits non-zero if any check fails.
#
#   benches/strace_durable.sh              # target/debug/eddy (built if missing)
#   EDDY_BIN=target/release/eddy benches/strace_durable.sh
#
# Needs strace (apt-get install strace) and python3. Plaintext on loopback
# (--insecure-plaintext), so that the request can be recognised by its
# topic name in the traced reads; TLS would not change the order of system
# calls.
set -euo pipefail
cd "$(dirname "$0")/.."

EDDY_BIN=${EDDY_BIN:-target/debug/eddy}
# Bound on waiting for the server to start or stop.
START_WAIT_S=60

command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 2; }
if [ ! -x "$EDDY_BIN" ]; then
  cargo build --bin eddy
fi

WORK=$(mktemp -d)
STRACE_PID=""
cleanup() {
  if [ -n "$STRACE_PID" ] && kill -0 "$STRACE_PID" 2>/dev/null; then
    kill -KILL "$STRACE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

DATA="$WORK/data"
TOPIC="strace-durable-$$-$RANDOM"
strace -f -tt -T -yy -s 256 \
  -e trace=fdatasync,fsync,sync_file_range,read,recvfrom,readv,recvmsg,write,sendto,writev,sendmsg \
  -o "$WORK/trace" \
  "$EDDY_BIN" serve --insecure-plaintext --listen 127.0.0.1:0 --data-dir "$DATA" \
  --no-metrics --log-level info 2>"$WORK/serve.log" &
STRACE_PID=$!

ADDR=""
for _ in $(seq 1 $((START_WAIT_S * 10))); do
  ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/serve.log" | head -1)
  [ -n "$ADDR" ] && break
  kill -0 "$STRACE_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ADDR" ]; then
  echo "eddy serve did not start:" >&2
  cat "$WORK/serve.log" >&2
  exit 1
fi
# The traced eddy is strace's only child.
EDDY_PID=$(pgrep -P "$STRACE_PID" | head -1)

# Created first, so that the only group-commit round between the produce's
# request and its ack is the produce's own (creating a topic syncs too).
"$EDDY_BIN" topics create "$TOPIC" --partitions 1 --server "$ADDR" --plaintext >/dev/null
echo "produce (acks durable) to topic $TOPIC on $ADDR"
echo "value-$TOPIC" | "$EDDY_BIN" produce --topic "$TOPIC" --acks durable \
  --server "$ADDR" --plaintext

kill -TERM "$EDDY_PID"
for _ in $(seq 1 $((START_WAIT_S * 10))); do
  kill -0 "$STRACE_PID" 2>/dev/null || break
  sleep 0.1
done
wait "$STRACE_PID" || { echo "eddy serve did not exit 0" >&2; cat "$WORK/serve.log" >&2; exit 1; }
STRACE_PID=""

python3 - "$WORK/trace" "$TOPIC" "$DATA" <<'EOF'
import re
import sys
from datetime import datetime

trace, topic, data = sys.argv[1:4]
READS = {"read", "recvfrom", "readv", "recvmsg"}
WRITES = {"write", "sendto", "writev", "sendmsg"}
SYNCS = {"fdatasync", "fsync"}

def secs(stamp):
    t = datetime.strptime(stamp, "%H:%M:%S.%f")
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6

line_re = re.compile(r"^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$")
done_re = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?).*?(?:<([\d.]+)>)?$")
unfinished_re = re.compile(r"^(\w+)\((.*)<unfinished \.\.\.>$")
resumed_re = re.compile(r"^<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(-?\d+|\?).*?(?:<([\d.]+)>)?$")

events = []  # (name, args, entry_s, exit_s, ret)
pending = {}
with open(trace, errors="replace") as f:
    for line in f:
        m = line_re.match(line.rstrip("\n"))
        if not m:
            continue
        pid, stamp, rest = m.group(1), secs(m.group(2)), m.group(3)
        if (u := unfinished_re.match(rest)):
            pending[pid] = (u.group(1), u.group(2), stamp)
        elif (r := resumed_re.match(rest)):
            name, args, entry = pending.pop(pid, (r.group(1), "", stamp))
            events.append((name, args + r.group(2), entry, stamp, r.group(3)))
        elif (d := done_re.match(rest)):
            duration = float(d.group(4) or 0)
            events.append((d.group(1), d.group(2), stamp, stamp + duration, d.group(3)))

def fd_of(args):
    # -yy: "12</path/to/file>" or "12<TCP:[127.0.0.1:7654->127.0.0.1:40000]>".
    m = re.match(r"(\d+)<((?:TCP|UDP)[v6]*:\[[^\]]*\]|[^>]*)>", args)
    return (m.group(1), m.group(2)) if m else (None, "")

def fmt(s):
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h):02}:{int(m):02}:{sec:09.6f}"

failures = []
request = next((e for e in events if e[0] in READS and topic in e[1]
                and fd_of(e[1])[1].startswith("TCP")), None)
if request is None:
    print(f"FAIL: no socket read with the produce request (topic {topic})")
    sys.exit(1)
fd, socket = fd_of(request[1])
ack = next((e for e in events if e[0] in WRITES and fd_of(e[1])[0] == fd
            and e[2] >= request[3]), None)
if ack is None:
    print(f"FAIL: no answer written to fd {fd} after the request")
    sys.exit(1)
log_db = f"{data}/log/db"
between = [e for e in events if e[0] in SYNCS and fd_of(e[1])[1] == log_db
           and e[2] >= request[2] and e[3] <= ack[2] and e[4] == "0"]
ranges = [e for e in events if e[0] == "sync_file_range" and fd_of(e[1])[1] == log_db
          and request[2] <= e[2] <= ack[2]]
print(f"request read   {fmt(request[2])}  {request[0]} on fd {fd} <{socket}>")
for e in sorted(ranges + between, key=lambda e: e[2]):
    note = "sled's flush: not durable" if e[0] == "sync_file_range" else f"{(e[3] - e[2]) * 1e3:.3f} ms, = 0"
    print(f"  {e[0]}({log_db})  {fmt(e[2])} -> {fmt(e[3])}  ({note})")
print(f"ack written    {fmt(ack[2])}  {ack[0]} on fd {fd}")
if not between:
    failures.append(f"no successful fdatasync/fsync of {log_db} completed between the request and its ack")

# Directories sled's files live in are fsynced at start (first start here).
for d in (f"{data}/log", data):
    if not any(e[0] in SYNCS and fd_of(e[1])[1] == d and e[4] == "0" for e in events):
        failures.append(f"the directory {d} was never fsynced")
    else:
        print(f"directory fsynced at start: {d}")

if failures:
    for f in failures:
        print("FAIL:", f)
    sys.exit(1)
print("OK: the durable ack was written only after an fdatasync of sled's log returned")
EOF
