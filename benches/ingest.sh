#!/usr/bin/env bash
# Durable-ingest benchmark of eddy over TLS loopback, as the core issue
# defines it, with medians over several runs.
#
#   benches/ingest.sh [RUNS]        (default 5 runs per scenario)
#   EDDY_BIN=path/to/eddy benches/ingest.sh 3     (another server build, e.g. a
#                                                  static one from packaging/)
#   EDDY_CLIENT_BIN=path/to/eddy                    (the load generator's build;
#                                                  default: the server's)
#
# For each scenario a fresh `eddy serve` (release build, temp data dir) is
# started; the client is `eddy bench produce` on the same machine. Reports
# records/s and ack latency (medians of the runs), the server's RSS idle and
# peak, bytes written to the device per payload byte (/proc/<pid>/io
# write_bytes), and the release binary size.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
PORT=${EDDY_BENCH_PORT:-17654}
if [ -z "${EDDY_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=$(realpath "${EDDY_BIN:-target/release/eddy}")
CLIENT=$(realpath "${EDDY_CLIENT_BIN:-$BIN}")
# Metrics on the next port (older builds have no metrics endpoint).
METRICS_FLAGS=""
if "$BIN" serve --help 2>&1 | grep -q -- --metrics-listen; then
  METRICS_FLAGS="--metrics-listen 127.0.0.1:$((PORT + 1))"
fi
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

start_server() {
  rm -rf "$WORK/data"
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level warn \
    $METRICS_FLAGS 2>"$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 100); do
    [ -s "$WORK/data/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
}

stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }

# scenario NAME RECORDS_PER_RUN BENCH_ARGS...
scenario() {
  local name=$1 records=$2; shift 2
  start_server
  local rss_idle wb0 wb1 rss_peak
  rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
  wb0=$(awk '/^write_bytes/ {print $2}' "/proc/$SERVER/io")
  : > "$WORK/runs"
  for _ in $(seq "$RUNS"); do
    "$CLIENT" bench produce --server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem" \
      --records "$records" --record-bytes 100 --json "$@" | tail -1 >> "$WORK/runs"
  done
  wb1=$(awk '/^write_bytes/ {print $2}' "/proc/$SERVER/io")
  rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
  stop_server
  local rps p50 p99
  rps=$(python3 -c 'import json,sys; [print(json.loads(l)["records_per_s"]) for l in sys.stdin]' < "$WORK/runs" | median)
  p50=$(python3 -c 'import json,sys; [print(json.loads(l)["p50_ms"]) for l in sys.stdin]' < "$WORK/runs" | median)
  p99=$(python3 -c 'import json,sys; [print(json.loads(l)["p99_ms"]) for l in sys.stdin]' < "$WORK/runs" | median)
  local amp
  amp=$(python3 -c "print(round(($wb1-$wb0)/($records*$RUNS*100), 2))")
  printf '%-34s %12.0f rec/s   p50 %7.3f ms   p99 %7.3f ms   rss idle %6d kB peak %7d kB   disk/payload %sx\n' \
    "$name" "$rps" "$p50" "$p99" "$rss_idle" "$rss_peak" "$amp"
}

echo "eddy $("$BIN" --help >/dev/null 2>&1; git rev-parse --short HEAD 2>/dev/null) on $(nproc) cores; medians of $RUNS runs"
scenario "8 conn, batch 1000, durable"   2000000 --connections 8 --batch 1000 --acks durable
scenario "8 conn, batch 1000, received"  2000000 --connections 8 --batch 1000 --acks received
scenario "1 conn, batch 1, durable"        20000 --connections 1 --batch 1 --acks durable
scenario "1 conn, batch 1, received"       20000 --connections 1 --batch 1 --acks received
echo "release binary: $(stat -c %s "$BIN") bytes ($BIN)"
