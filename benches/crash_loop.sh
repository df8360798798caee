#!/usr/bin/env bash
# 200 (or $1) kill -9 cycles during durable ingest by 4 producers, with a
# release build: after every restart every acknowledged record must be
# there at its offset, offsets dense, every batch CRC-clean, the start
# bounded, and every cycle must get acknowledgements before its kill
# (tests/crash_loop.rs; CI runs 50 cycles with the debug build).
#
#   benches/crash_loop.sh [CYCLES]
#   EDDY_TEST_SEED=N benches/crash_loop.sh 200     (replays a run)
#
# The whole test output goes to a log file (its path is printed); the last
# line is the result to paste into a report:
#   crash loop: PASS 200 kill -9 cycles, 123456 acknowledged records verified
#   after the last restart (every cycle acknowledged 40 or more), 310 more
#   fsynced without an ack, slowest restart 412 ms, seed 1234 (release build)
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-200}
LOG=$(mktemp /tmp/eddy-crash-loop.XXXXXX.log)
rc=0
EDDY_CRASH_CYCLES=$CYCLES cargo test --release --test crash_loop -- --nocapture > "$LOG" 2>&1 || rc=$?
grep -E "cycles, seed|kill -9 cycles:|test result|panicked|assert" "$LOG" || true
echo "full output: $LOG"
result=$(grep '^crash loop result: ' "$LOG" | tail -1 || true)
seed=$(sed -n 's/.*seed \([0-9]*\) (EDDY_TEST_SEED.*/\1/p' "$LOG" | head -1)
if [ "$rc" -ne 0 ] || [ -z "$result" ]; then
  echo "crash loop: FAIL after $CYCLES planned cycles (exit $rc), seed ${seed:-unknown}" \
    "(EDDY_TEST_SEED=${seed:-…} benches/crash_loop.sh $CYCLES replays it); see $LOG"
  exit 1
fi
val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< "$result"; }
echo "crash loop: PASS $(val cycles) kill -9 cycles, $(val acked_verified) acknowledged records verified" \
  "after the last restart (every cycle acknowledged $(val min_acked_per_cycle) or more)," \
  "$(val unacked_kept) more fsynced without an ack, slowest restart $(val slowest_start_ms) ms," \
  "seed $(val seed) (release build)"
