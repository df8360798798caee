#!/usr/bin/env bash
# The Kafka listener against librdkafka (kcat), side by side with eddy's
# own client in the same run, medians of RUNS:
#
# 1. consume: `kcat -C` reads RECORDS × 100 B (8 partitions, written by
#    `eddy bench produce`) from the beginning over plaintext loopback, vs
#    `eddy bench consume` of the same topic over TLS loopback;
# 2. produce: kcat's idempotent producer with acks=all (durable) writes
#    PRODUCE_RECORDS × 100 B to a fresh topic, vs `eddy bench produce
#    --producer` (eddy's batching producer, acks durable, one connection).
#
#   benches/kafka_listener.sh [RUNS] [RECORDS] [PRODUCE_RECORDS]
#   (default 3 runs, 10000000, 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
RECORDS=${2:-10000000}
PRODUCE_RECORDS=${3:-2000000}
PORT=${EDDY_BENCH_PORT:-17664}
KPORT=${EDDY_BENCH_KAFKA_PORT:-19664}
command -v kcat >/dev/null || { echo "kcat is missing: apt-get install kcat" >&2; exit 1; }
if [ -z "${EDDY_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${EDDY_BIN:-$PWD/target/release/eddy}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { python3 -c "import json,sys; [print(json.loads(l)['$1']) for l in sys.stdin]"; }
now() { date +%s.%N; }
rate() { python3 -c "print(round($1 / ($3 - $2)))"; }

"$BIN" serve --listen "127.0.0.1:$PORT" --kafka-listen "127.0.0.1:$KPORT" --data-dir "$WORK/data" \
  --metrics-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --log-level warn 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do
  [ -s "$WORK/data/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break
  sleep 0.1
done
C=(--server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem")
K=(-b "127.0.0.1:$KPORT" -q)
"$BIN" bench produce "${C[@]}" -q --keep-topics --topic big --partitions 8 --records "$RECORDS" \
  --record-bytes 100 --connections 8 --batch 1000 --acks durable > /dev/null

: > "$WORK/kcat_consume"; : > "$WORK/eddy_consume"
for _ in $(seq "$RUNS"); do
  start=$(now)
  got=$(kcat "${K[@]}" -C -t big -o beginning -e -f '\n' -X fetch.max.bytes=8388608 | wc -l)
  end=$(now)
  [ "$got" -eq "$RECORDS" ] || { echo "kcat read $got of $RECORDS" >&2; exit 1; }
  rate "$RECORDS" "$start" "$end" >> "$WORK/kcat_consume"
  "$BIN" bench consume "${C[@]}" -q --topic big --json | tail -1 | field records_per_s >> "$WORK/eddy_consume"
done

python3 -c "import sys; v = 'x' * 100; sys.stdout.write((v + '\n') * $PRODUCE_RECORDS)" > "$WORK/values"
: > "$WORK/kcat_produce"; : > "$WORK/eddy_produce"
for run in $(seq "$RUNS"); do
  "$BIN" topics "${C[@]}" create "kp$run" --partitions 8 > /dev/null
  start=$(now)
  kcat "${K[@]}" -P -t "kp$run" -X enable.idempotence=true -X acks=all -X linger.ms=5 \
    -X batch.size=1000000 < "$WORK/values"
  end=$(now)
  rate "$PRODUCE_RECORDS" "$start" "$end" >> "$WORK/kcat_produce"
  stored=$("$BIN" topics "${C[@]}" describe "kp$run" --json \
    | python3 -c "import json,sys; print(sum(p['durable'] for p in json.load(sys.stdin)['watermarks']))")
  [ "$stored" -eq "$PRODUCE_RECORDS" ] || { echo "kcat stored $stored of $PRODUCE_RECORDS" >&2; exit 1; }
  "$BIN" bench produce "${C[@]}" -q --topic "ep$run" --partitions 8 --records "$PRODUCE_RECORDS" \
    --record-bytes 100 --connections 1 --producer --window 100000 --acks durable --json \
    | tail -1 | field records_per_s >> "$WORK/eddy_produce"
done

echo "runs: $RUNS; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
kc=$(median < "$WORK/kcat_consume"); ec=$(median < "$WORK/eddy_consume")
kp=$(median < "$WORK/kcat_produce"); ep=$(median < "$WORK/eddy_produce")
printf 'consume %s × 100 B: kcat %10.0f records/s, eddy bench consume %10.0f (kcat/eddy %.2f)\n' \
  "$RECORDS" "$kc" "$ec" "$(python3 -c "print($kc / $ec)")"
printf 'produce %s × 100 B: kcat idempotent acks=all %10.0f records/s, eddy --producer durable %10.0f (kcat/eddy %.2f)\n' \
  "$PRODUCE_RECORDS" "$kp" "$ep" "$(python3 -c "print($kp / $ep)")"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
