#!/usr/bin/env bash
# What storage costs the flash: bytes written to the device and bytes kept
# in the data directory per value byte, this build beside a baseline build,
# in one run (medians of RUNS runs, a fresh server and data dir per run).
#
#   benches/storage.sh [RUNS]                  (default 3)
#   EDDY_BIN=path/to/eddy                      this build (default: cargo build --release)
#   EDDY_BASE_BIN=path/to/eddy                 the baseline (default: built from
#                                              EDDY_BASE_REV in a temporary git worktree,
#                                              removed afterwards)
#   EDDY_BASE_REV=13f6c4d                      the baseline commit (sled-only storage)
#
# Scenarios (TLS on loopback, acks durable):
#   devices        1,000 devices × one 64-byte reading/s for 30 s (`eddy bench devices`)
#   devices-f100   the same with flush.ms=100 on the topic (builds that have flush.ms)
#   produce        8 connections × batches of 1,000 × 100 B, 2,000,000 records
#                  (`eddy bench produce`)
# Reported per scenario: written = the server's /proc/PID/io write_bytes over
# the run / value bytes stored; stored = `du -sb` of the data dir at the end /
# value bytes (without the TLS files and the fixed emergency-space file);
# ack p99 (devices) or records/s (produce).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
PORT=${EDDY_BENCH_PORT:-17854}
BASE_REV=${EDDY_BASE_REV:-13f6c4d}
WORK=$(mktemp -d)
BASE_TREE=""
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$WORK"
  if [ -n "$BASE_TREE" ]; then
    git worktree remove --force "$BASE_TREE" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ -z "${EDDY_BIN:-}" ]; then cargo build --release --quiet; fi
NEW=$(realpath "${EDDY_BIN:-target/release/eddy}")
if [ -n "${EDDY_BASE_BIN:-}" ]; then
  BASE=$(realpath "$EDDY_BASE_BIN")
else
  BASE_TREE="$WORK/base-tree"
  git worktree add --detach "$BASE_TREE" "$BASE_REV" >/dev/null
  (cd "$BASE_TREE" && cargo build --release --quiet)
  cp "$BASE_TREE/target/release/eddy" "$WORK/eddy-base"
  BASE="$WORK/eddy-base"
fi

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

start_server() { # BIN
  rm -rf "$WORK/data"
  "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level warn \
    --metrics-listen "127.0.0.1:$((PORT + 1))" 2>"$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 200); do
    [ -s "$WORK/data/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
}
stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }
write_bytes() { awk '/^write_bytes/ {print $2}' "/proc/$SERVER/io"; }
client() { "$1" "${@:2}" --server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem"; }
# Records stored in TOPIC (sum of log ends).
stored_records() { # BIN TOPIC
  client "$1" topics describe "$2" --json |
    python3 -c 'import json,sys; print(sum(p["log_end"] for p in json.load(sys.stdin)["watermarks"]))'
}

# one_run BIN SCENARIO: prints "written stored metric" (ratios to value bytes)
one_run() {
  local bin=$1 scenario=$2 wb0 wb1 out records value_bytes metric
  start_server "$bin"
  case $scenario in
    devices-f100)
      client "$bin" topics create devices --partitions 8 --config flush.ms=100 >/dev/null ;;
  esac
  wb0=$(write_bytes)
  case $scenario in
    devices|devices-f100)
      out=$(client "$bin" bench devices --connections 1000 --interval-ms 1000 --duration-s 30 \
        --value-bytes 64 --keep-topics --server-pid "$SERVER" --quiet --json | tail -1)
      metric=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p99_ms"])' "$out")
      records=$(stored_records "$bin" devices)
      value_bytes=$((records * 64)) ;;
    produce)
      out=$(client "$bin" bench produce --connections 8 --batch 1000 --record-bytes 100 \
        --records 2000000 --keep-topics --quiet --json | tail -1)
      metric=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["records_per_s"])' "$out")
      records=$(stored_records "$bin" bench)
      value_bytes=$((records * 100)) ;;
  esac
  wb1=$(write_bytes)
  local du_bytes
  # Not the TLS files, nor the hub's fixed 4 MiB emergency-space file (the
  # free-space reserve's, released to start on a full disk): neither grows
  # with the data.
  du_bytes=$(du -sb "$WORK/data" --exclude tls --exclude emergency-space | awk '{print $1}')
  stop_server
  python3 -c 'import sys; w,d,v=map(int,sys.argv[1:4]); print(f"{w/v:.2f} {d/v:.2f} {sys.argv[4]}")' \
    "$((wb1 - wb0))" "$du_bytes" "$value_bytes" "$metric"
}

report() { # LABEL BIN SCENARIO
  : > "$WORK/runs"
  for _ in $(seq "$RUNS"); do one_run "$2" "$3" >> "$WORK/runs"; done
  local w d m
  w=$(awk '{print $1}' "$WORK/runs" | median)
  d=$(awk '{print $2}' "$WORK/runs" | median)
  m=$(awk '{print $3}' "$WORK/runs" | median)
  printf '%-9s %-13s written %6s×  stored %5s×  %s %s   (runs: %s)\n' "$1" "$3" "$w" "$d" \
    "$([ "$3" = produce ] && echo records/s || echo ack-p99-ms)" "$m" \
    "$(awk '{printf "%s/%s/%s ", $1, $2, $3}' "$WORK/runs")"
}

echo "storage bench: $RUNS runs per line, medians; written and stored per value byte"
for scenario in devices devices-f100 produce; do
  if [ "$scenario" != devices-f100 ]; then report baseline "$BASE" "$scenario"; fi
  report this "$NEW" "$scenario"
done
