#!/usr/bin/env bash
# 200 (or CYCLES) power cuts during durable ingest by 4 producers: the crash
# loop of benches/crash_loop.sh with eddy's data directory on the power-cut
# FUSE file system (tests/common/powercut_fs.rs). After each kill -9 the FS
# takes back every write, size change and directory change that was not
# fsynced (half the cuts exactly, half torn at page boundaries), then eddy
# restarts: every acknowledged record must be there at its offset, every
# record read after an earlier restart unchanged (no offset reused),
# offsets dense, batches CRC-clean, the start bounded. Needs root and
# /dev/fuse (apt-get install fuse3). Release build unless
# EDDY_BENCH_PROFILE=debug (CI runs 50 cycles with the debug build).
#
#   benches/power_cut.sh [CYCLES] [SEED]
#
# The seed replays the random choices (kill moments, cut modes, which
# pages survive), not the thread timing. The whole test output goes to a
# log file (its path is printed); the last line is the result:
#   power cut: PASS 200 cycles, 123456 acknowledged records verified, 0 lost,
#   slowest restart 412 ms, seed 1234 (release build)
# or
#   power cut: FAIL after 200 planned cycles (exit 101), seed 1234
#   (benches/power_cut.sh 200 1234 replays it); see LOG
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-200}
SEED=${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
PROFILE=${EDDY_BENCH_PROFILE:-release}
PROFILE_ARGS=(--release)
if [ "$PROFILE" = debug ]; then PROFILE_ARGS=(); fi
LOG=$(mktemp /tmp/eddy-power-cut.XXXXXX.log)
rc=0
EDDY_POWER_CYCLES=$CYCLES EDDY_TEST_SEED=$SEED \
  cargo test "${PROFILE_ARGS[@]}" --test power_cut -- --ignored --nocapture \
  power_cut_during_durable_ingest > "$LOG" 2>&1 || rc=$?
grep -E "cycles, seed|power cuts \(|test result|panicked|assert" "$LOG" || true
echo "full output: $LOG"
result=$(grep '^power cut result: ' "$LOG" | tail -1 || true)
if [ "$rc" -ne 0 ] || [ -z "$result" ]; then
  echo "power cut: FAIL after $CYCLES planned cycles (exit $rc), seed $SEED" \
    "(benches/power_cut.sh $CYCLES $SEED replays it); see $LOG"
  exit 1
fi
val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< "$result"; }
echo "power cut: PASS $(val cycles) cycles, $(val acked_verified) acknowledged records verified," \
  "$(val lost) lost, slowest restart $(val slowest_start_ms) ms, seed $(val seed)" \
  "($(val pages_lost) unsynced pages and $(val names_reverted) directory changes taken back; $PROFILE build)"
