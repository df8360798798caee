#!/usr/bin/env bash
# Compaction benchmark (issue 3): a topic with 1M records over 10k keys
# (4 partitions, 100-byte values) is switched to cleanup.policy=compact
# while producers write to another topic; reports how long compaction took
# (the slowest partition's pass as the server logs it, and from the alter
# until every partition finished), how many records
# it removed, and the producers' p99 ack latency during the compaction
# window (from the alter until every partition's pass finished) against the
# same producers without compaction (the 4 s before the alter, same run).
# The producers run for LOAD_S seconds, long enough to cover the whole pass
# and TAIL_S seconds after it; a run whose producers stopped before that
# fails instead of reporting a window they did not load. Medians of RUNS
# runs, each on a fresh topic.
#
#   benches/compaction.sh [RUNS]     (default 3)
#   COMPACTION_LOAD_S=60 benches/compaction.sh   (if a pass takes longer)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
PORT=${EDDY_BENCH_PORT:-17654}
BASE_S=4                          # producers alone before the alter
TAIL_S=2                          # producers still running after the pass
LOAD_S=${COMPACTION_LOAD_S:-40}   # producers in all (a pass takes ~9 s)
cargo build --release --quiet
BIN=$PWD/target/release/eddy
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
now_ms() { date +%s%3N; }
# p99 of the latencies (µs → ms) of acks that arrived in [FROM, TO] ms.
p99() { awk -v f="$2" -v t="$3" '$1>=f && $1<=t {print $2}' "$1" | sort -g |
        awk '{a[NR]=$1} END {i=int(NR*0.99+0.999); if (i<1) i=1; printf "%.3f %d\n", a[i]/1000, NR}'; }

"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level info \
  --maintenance-interval-ms 200 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 100); do
  [ -s "$WORK/data/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
C=(--server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem")
LOAD=(bench produce "${C[@]}" --topic load --partitions 4 --connections 4 --batch 100 --record-bytes 100 --acks durable)
: > "$WORK/results"
for run in $(seq "$RUNS"); do
  T=compact$run
  "$BIN" topics create "$T" --partitions 4 "${C[@]}" >/dev/null
  "$BIN" bench produce "${C[@]}" --topic "$T" --records 1000000 --keys 10000 --record-bytes 100 \
    --connections 4 --batch 1000 --acks durable >/dev/null
  # Producers for LOAD_S s: BASE_S s without compaction, then the alter.
  "$BIN" "${LOAD[@]}" --duration-s "$LOAD_S" --latency-out "$WORK/lat$run" >/dev/null &
  LOADER=$!
  LOAD_START=$(now_ms)
  sleep "$BASE_S"
  T0=$(now_ms)
  "$BIN" topics alter "$T" --config cleanup.policy=compact "${C[@]}" >/dev/null
  # Done when the server has logged a finished pass for every partition
  # (grep on the log: polling the server itself would load the machine
  # during the very window being measured). The topic gets no writes after
  # the alter, so each partition runs exactly one pass.
  until [ "$(grep -c "compacted $T/" "$WORK/serve.log")" -ge 4 ]; do sleep 0.05; done
  T1=$(now_ms)
  # The measured window [T0, T1] must lie inside the producers' run, with
  # TAIL_S to spare (their last acks are not a shutdown artefact).
  if [ $((T1 + TAIL_S * 1000)) -gt $((LOAD_START + LOAD_S * 1000)) ] || ! kill -0 "$LOADER" 2>/dev/null; then
    echo "run $run: the pass ended $(( (T1 - T0) / 1000 )) s after the alter, too close to the end of" \
         "the producers' ${LOAD_S} s: rerun with COMPACTION_LOAD_S=$(( (T1 - LOAD_START) / 1000 * 2 + TAIL_S ))" >&2
    exit 1
  fi
  sleep "$TAIL_S"
  kill -0 "$LOADER" 2>/dev/null || { echo "run $run: producers stopped during the tail" >&2; exit 1; }
  wait "$LOADER"
  removed=$("$BIN" topics describe "$T" --json "${C[@]}" |
    python3 -c 'import json,sys; print(sum(s["compaction_removed_records"] for s in json.load(sys.stdin)["storage"]))')
  read -r base_p99 base_n < <(p99 "$WORK/lat$run" 0 $((T0 - 500)))
  read -r comp_p99 comp_n < <(p99 "$WORK/lat$run" "$T0" "$T1")
  pass_ms=$(grep "compacted $T/" "$WORK/serve.log" | sed -E 's/.* in ([0-9]+) ms.*/\1/' | sort -g | tail -1)
  echo "$pass_ms $removed $base_p99 $comp_p99 $base_n $comp_n $((T1 - T0))" | tee -a "$WORK/results"
done
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
grep "compacted compact1/" "$WORK/serve.log" | head -4 || true
col() { awk -v c="$1" '{print $c}' "$WORK/results" | median; }
printf 'compaction of 1M records / 10k keys: %s ms per pass, %s ms from the alter (medians of %s), removed %s records\n' \
  "$(col 1)" "$(col 7)" "$RUNS" "$(col 2)"
printf 'producer ack p99: %s ms without compaction, %s ms during compaction (medians; ratio %s)\n' \
  "$(col 3)" "$(col 4)" "$(python3 -c "print(round($(col 4)/$(col 3), 2))")"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
