#!/usr/bin/env bash
# Floods: do 5,000 idle TLS devices and 500 slowloris handshakes slow down
# real producers? (issue 7: throughput must stay >= 80% of undisturbed)
#
#   benches/flood.sh [ROUNDS]      (default 3; each round = one undisturbed
#                                   and one flooded run, back to back)
#   FLOOD_IDLE=5000 FLOOD_SLOW=500 FLOOD_SECONDS=20 benches/flood.sh 5
#
# A release `eddy serve` (temp data dir, port 17720, defaults but
# connections_per_ip_max raised to 1000 per source, which is the default)
# gets 8 producers (`eddy bench produce --connections 8 --batch 100
# --acks durable`) for FLOOD_SECONDS, alone and then while benches/flood.py
# holds FLOOD_IDLE idle TLS connections (TLS + Hello, then silence) and
# FLOOD_SLOW slowloris connections, from 10 loopback source addresses.
# Prints records/s and ack p99 of each run, the flooded/undisturbed ratio
# per round, and the medians; plus the server's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PORT=${EDDY_BENCH_PORT:-17720}
IDLE=${FLOOD_IDLE:-5000}
SLOW=${FLOOD_SLOW:-500}
SECONDS_PER_RUN=${FLOOD_SECONDS:-20}
cargo build --release --quiet
BIN=$PWD/target/release/eddy
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
# The flood needs a descriptor per connection (the server raises its own).
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE + SLOW + 256)) ] ||
  { echo "open-file limit $(ulimit -n) is below $((IDLE + SLOW + 256)): raise it (ulimit -Hn)"; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.readlines()[-1])['$1'])"; }

"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level warn \
  --metrics-listen "127.0.0.1:$((PORT + 1))" --max-connections 20000 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do
  [ -s "$WORK/data/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

produce() {
  "$BIN" bench produce --server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem" \
    --connections 8 --batch 100 --record-bytes 100 --acks durable \
    --duration-s "$SECONDS_PER_RUN" --topic flood --partitions 8 --json
}

: > "$WORK/ratios"; : > "$WORK/calm"; : > "$WORK/flooded"
for round in $(seq "$ROUNDS"); do
  calm=$(produce)
  python3 benches/flood.py 127.0.0.1 "$PORT" --idle "$IDLE" --slow "$SLOW" > "$WORK/flood.out" 2>&1 &
  FLOOD=$!
  for _ in $(seq 1200); do grep -q '^ready' "$WORK/flood.out" && break; sleep 0.1; done
  grep -q '^ready' "$WORK/flood.out" || { echo "the flood did not get up:"; cat "$WORK/flood.out"; exit 1; }
  open=$(curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk '/^eddy_connections_active / {print $2}')
  flooded=$(produce)
  kill -TERM "$FLOOD"; wait "$FLOOD" || true
  cuts=$(grep -o 'slowloris_cut_off=[0-9]*' "$WORK/flood.out" | tail -1)
  c=$(echo "$calm" | field records_per_s); f=$(echo "$flooded" | field records_per_s)
  cp99=$(echo "$calm" | field p99_ms); fp99=$(echo "$flooded" | field p99_ms)
  ratio=$(python3 -c "print(round($f/$c, 3))")
  echo "$c" >> "$WORK/calm"; echo "$f" >> "$WORK/flooded"; echo "$ratio" >> "$WORK/ratios"
  printf 'round %d: undisturbed %9.0f rec/s (p99 %6.2f ms) | flooded %9.0f rec/s (p99 %6.2f ms), %s connections open, %s | ratio %s\n' \
    "$round" "$c" "$cp99" "$f" "$fp99" "$open" "$cuts" "$ratio"
  # Let the server close the flood's connections before the next round.
  for _ in $(seq 300); do
    n=$(curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk '/^eddy_connections_active / {print $2}')
    [ "${n%.*}" -le 1 ] && break; sleep 0.1
  done
done
peak=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
echo "median undisturbed $(median < "$WORK/calm") rec/s, flooded $(median < "$WORK/flooded") rec/s," \
  "ratio median $(median < "$WORK/ratios") (rounds: $(paste -sd' ' "$WORK/ratios")); server peak RSS ${peak} kB"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
