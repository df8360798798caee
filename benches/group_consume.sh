#!/usr/bin/env bash
# Consumer group benchmark (issue 3): a group of 4 members reads a
# 10M-record topic (8 partitions, 100-byte values) from the beginning, over
# TLS loopback. Reports records/s (median of the runs, each with a fresh
# group) and checks the lag the server reports while the group runs
# (`eddy bench group-consume` fails when a sample is wrong). The plain
# single-connection `eddy bench consume` of the same topic is the baseline.
#
#   benches/group_consume.sh [RUNS] [RECORDS]     (default 5 runs, 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
RECORDS=${2:-10000000}
PORT=${EDDY_BENCH_PORT:-17654}
cargo build --release --quiet
BIN=$PWD/target/release/eddy
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { python3 -c "import json,sys; [print(json.loads(l)['$1']) for l in sys.stdin]"; }

"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level warn 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do
  [ -s "$WORK/data/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
C=(--server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem")
"$BIN" bench produce "${C[@]}" --keep-topics --topic big --partitions 8 --records "$RECORDS" --record-bytes 100 \
  --connections 8 --batch 1000 --acks durable
: > "$WORK/group"; : > "$WORK/single"
for _ in $(seq "$RUNS"); do
  "$BIN" bench group-consume "${C[@]}" --topic big --members 4 --lag-every-ms 100 --json | tail -1 >> "$WORK/group"
  "$BIN" bench consume "${C[@]}" --topic big --json | tail -1 >> "$WORK/single"
done
echo "runs: $(wc -l < "$WORK/group"); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'group of 4:        %12.0f records/s (median; min %.0f, max %.0f); lag samples %s, wrong %s\n' \
  "$(field records_per_s < "$WORK/group" | median)" \
  "$(field records_per_s < "$WORK/group" | sort -g | head -1)" \
  "$(field records_per_s < "$WORK/group" | sort -g | tail -1)" \
  "$(field lag_samples < "$WORK/group" | paste -sd+ | bc)" \
  "$(field lag_violations < "$WORK/group" | paste -sd+ | bc)"
printf 'single connection: %12.0f records/s (median)\n' "$(field records_per_s < "$WORK/single" | median)"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
