#!/usr/bin/env bash
# Runs each cargo-fuzz target (tests/fuzz/: frame, request, batch) for a
# while against a scratch copy of its seed corpus, so new inputs never land
# in the repository, and reports execs and findings per target.
#
#   benches/fuzz.sh [TARGET...]          (default: frame request batch)
#   FUZZ_SECONDS=600 benches/fuzz.sh     (seconds per target; default 600)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler for
# the sanitizer flags: `cargo +nightly` when a nightly toolchain is
# installed, else the stable one with RUSTC_BOOTSTRAP=1 (FUZZ_TOOLCHAIN=
# nightly|bootstrap chooses). Built optimised (-O) with AddressSanitizer;
# FUZZ_DEBUG_ASSERTIONS=1 adds debug assertions (-a: integer overflows
# become findings; a separate build, and slower runs).
# -timeout=10: an input that takes over 10 s is a finding.
#
# Per target it prints execs, execs/s, how many inputs the run added to
# the scratch corpus and the findings (libFuzzer's crash-, leak-, timeout-
# and oom- files), which are kept and their paths printed: minimise one
# (`cargo fuzz tmin`), fix the bug, and add it to tests/fuzz/regressions/
# as <target>-<what>. The last line is the result; exit 1 on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-600}
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=(frame request batch); fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2; exit 1; }
TOOLCHAIN=${FUZZ_TOOLCHAIN:-}
if [ -z "$TOOLCHAIN" ]; then
  if cargo +nightly --version >/dev/null 2>&1; then TOOLCHAIN=nightly; else TOOLCHAIN=bootstrap; fi
fi
case "$TOOLCHAIN" in
  nightly) FUZZ=(cargo +nightly fuzz) ;;
  bootstrap) FUZZ=(env RUSTC_BOOTSTRAP=1 cargo fuzz) ;;
  *) echo "FUZZ_TOOLCHAIN must be nightly or bootstrap" >&2; exit 1 ;;
esac
FLAGS=(-O)
[ "${FUZZ_DEBUG_ASSERTIONS:-0}" = 1 ] && FLAGS+=(--debug-assertions)
WORK=$(mktemp -d /tmp/eddy-fuzz.XXXXXX)
echo "fuzzing with ${FUZZ[*]}, $SECONDS_PER_TARGET s per target; scratch: $WORK"
"${FUZZ[@]}" build --fuzz-dir tests/fuzz "${FLAGS[@]}" 2>&1 | tail -n 3

FINDINGS_TOTAL=0
SUMMARY=()
for target in "${TARGETS[@]}"; do
  corpus=$WORK/corpus/$target artifacts=$WORK/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  cp tests/fuzz/corpus/"$target"/* "$corpus/"
  seeds=$(find "$corpus" -type f | wc -l)
  echo "== $target ($seeds seeds)"
  rc=0
  "${FUZZ[@]}" run --fuzz-dir tests/fuzz "${FLAGS[@]}" "$target" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" > "$WORK/$target.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$WORK/$target.log" | tail -1)
  per_s=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\)/\1/p' "$WORK/$target.log" | tail -1)
  added=$(( $(find "$corpus" -type f | wc -l) - seeds ))
  findings=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  if [ -z "$execs" ]; then
    echo "  libFuzzer printed no final stats (exit $rc):"; tail -n 30 "$WORK/$target.log"
    findings=$((findings + 1))
  elif [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then
    echo "  exit $rc without an artifact:"; tail -n 30 "$WORK/$target.log"
    findings=1
  fi
  echo "  $target: ${execs:-?} execs (${per_s:-?}/s), $added inputs added to the corpus, $findings findings"
  find "$artifacts" -type f | sed 's/^/  finding: /'
  FINDINGS_TOTAL=$((FINDINGS_TOTAL + findings))
  SUMMARY+=("$target ${execs:-?} execs ${findings} findings")
done
VERDICT=PASS; [ "$FINDINGS_TOTAL" -eq 0 ] || VERDICT=FAIL
echo "fuzz: $VERDICT ${SECONDS_PER_TARGET} s per target: $(IFS=';'; echo "${SUMMARY[*]}" | sed 's/;/; /g') (logs and findings in $WORK)"
[ "$FINDINGS_TOTAL" -eq 0 ]
