#!/usr/bin/env bash
# 200 (or $1) kill -9 cycles during durable ingest by 4 producers, with a
# release build: after every restart every acknowledged record must be
# there at its offset, offsets dense, every batch CRC-clean, and the start
# bounded (tests/crash_loop.rs; CI runs 50 cycles with the debug build).
# Prints the seed (EDDY_TEST_SEED=… replays a run) and a summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-200}
EDDY_CRASH_CYCLES=$CYCLES cargo test --release --test crash_loop -- --nocapture 2>&1 |
  grep -E "cycles|test result|panicked|assert"
