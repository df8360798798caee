#!/usr/bin/env bash
# Hand check of the Kafka mirror against a real Kafka-protocol broker, Tansu
# (../shared/peers.md: `cargo install tansu --version 0.6.0 --locked
# --features dynostore,libsql`, sqlite storage). Not in CI (Tansu takes 30
# minutes to build). 100,000 keyed records over 4 partitions, produced in
# four rounds; the source eddy is killed with -9 after round 2 and Tansu is
# restarted after round 3. Passes when the mirror reports no lag and
# Tansu's high watermark of every partition equals the source's log end;
# then a librdkafka consumer (python3 confluent-kafka) reads the topic back
# and counts duplicates and order per partition (best effort: Tansu 0.6 has
# been seen to stop answering consumers after a restart).
#
#   benches/mirror_tansu.sh            (ports 17450 Tansu, 17451 eddy)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tansu >/dev/null || { echo "tansu not installed (see ../shared/peers.md)" >&2; exit 2; }
cargo build --release --quiet
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cp target/release/eddy "$WORK/eddy"
cd "$WORK"
TP=${TANSU_PORT:-17450}; EP=${EDDY_PORT:-17451}
start_tansu() {
  tansu broker --listener-url "tcp://127.0.0.1:$TP" --advertised-listener-url "tcp://127.0.0.1:$TP" \
    --storage-engine sqlite://tansu.db >>tansu.log 2>&1 &
  TANSU=$!
}
start_eddy() {
  ./eddy serve --listen "127.0.0.1:$EP" --data-dir src --no-metrics --hub-id gw \
    --mirror "tansu=kafka://127.0.0.1:$TP" 2>>src.log &
  EDDY=$!
  for _ in $(seq 100); do
    [ -s src/tls/ca.pem ] && (exec 3<>"/dev/tcp/127.0.0.1/$EP") 2>/dev/null && return
    sleep 0.1
  done
  echo "eddy did not start" >&2; exit 1
}
C=(--server "127.0.0.1:$EP" --ca src/tls/ca.pem)
lag() { ./eddy mirror status --json "${C[@]}" | python3 -c 'import json,sys; print(sum(p["lag_records"] for l in json.load(sys.stdin) for p in l["partitions"]))'; }
start_tansu
start_eddy
./eddy topics create sensors --partitions 4 "${C[@]}" >/dev/null
for round in 0 1 2 3; do
  seq $((round * 25000)) $((round * 25000 + 24999)) | awk '{print "key-" ($1 % 10000) "|" $1}' \
    | ./eddy produce --topic sensors --key-separator '|' --batch 1000 "${C[@]}"
  if [ "$round" = 1 ]; then kill -9 "$EDDY"; wait "$EDDY" 2>/dev/null || true; echo "source killed with -9"; start_eddy; fi
  if [ "$round" = 2 ]; then kill "$TANSU"; wait "$TANSU" 2>/dev/null || true; echo "tansu restarted"; start_tansu; fi
done
for _ in $(seq 600); do [ "$(lag)" = 0 ] && break; sleep 0.5; done
./eddy mirror status "${C[@]}"
[ "$(lag)" = 0 ] || { echo "mirror_tansu: FAIL (lag left)"; exit 1; }
ENDS=$(./eddy topics describe sensors --json "${C[@]}" | python3 -c 'import json,sys; print(json.dumps({p["partition"]: p["log_end"] for p in json.load(sys.stdin)["watermarks"]}))')
python3 - "$TP" "$ENDS" <<'PY'
import sys, collections, time
from confluent_kafka import Consumer, TopicPartition
port, ends = sys.argv[1], {int(k): v for k, v in __import__("json").loads(sys.argv[2]).items()}
c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "mirror-check", "enable.auto.commit": False})
highs = {p: c.get_watermark_offsets(TopicPartition("gw.sensors", p), timeout=30)[1] for p in range(4)}
print("Tansu high watermarks", highs, "source log ends", ends)
if highs != ends:
    print("mirror_tansu: FAIL (upstream and source differ)"); sys.exit(1)
print("mirror_tansu: PASS (every partition upstream ends where the source ends)")
c.assign([TopicPartition("gw.sensors", p, 0) for p in range(4)])
last = collections.defaultdict(lambda: -1); seen = collections.Counter(); disorder = 0; quiet = time.time()
while time.time() - quiet < 30 and sum(seen.values()) < sum(highs.values()):
    m = c.poll(1)
    if m is None or m.error(): continue
    quiet = time.time()
    _, _, p, off = dict(m.headers())["eddy.source"].decode().split("/")
    p, off = int(p), int(off)
    disorder += off <= last[p]; last[p] = off; seen[(p, off)] += 1
print(f"read back {sum(seen.values())} records, {len(seen)} distinct source positions, "
      f"{sum(1 for v in seen.values() if v > 1)} duplicates, {disorder} out of order")
PY
