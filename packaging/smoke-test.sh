#!/usr/bin/env bash
# Smoke test of an eddy binary as a process, optionally under an emulator
# (qemu-user) for the ARM builds: serve, produce, consume, scrape metrics,
# reload TLS on SIGHUP, stop gracefully on SIGTERM, restart and read the
# same records back.
#
#   packaging/smoke-test.sh BINARY [RUNNER...]
#   packaging/smoke-test.sh target/dist/aarch64-unknown-linux-musl/eddy qemu-aarch64
#
# The server listens on 127.0.0.1 port 0 (addresses are read from its log),
# so it never clashes with anything else on the machine. Exits non-zero on
# the first failed step, with the server's log.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [RUNNER...]" >&2; exit 2; }
BIN=$(realpath "$1"); shift
RUNNER=("$@")
RECORDS=500
# Emulated ARM runs about ten times slower than native: generous bounds.
START_TIMEOUT_S=120
STOP_TIMEOUT_S=60
WORK=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then kill -KILL "$SERVER"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "SMOKE TEST FAILED: $*" >&2
  echo "--- server log" >&2
  cat "$WORK/serve.log" >&2 || true
  exit 1
}
eddy() { "${RUNNER[@]}" "$BIN" "$@"; }

# Waits until the log has a line matching $1, or fails after $2 seconds.
wait_log() {
  local deadline=$((SECONDS + $2))
  until grep -q "$1" "$WORK/serve.log"; do
    [ $SECONDS -lt $deadline ] || fail "no '$1' in the log within $2 s"
    kill -0 "$SERVER" 2>/dev/null || fail "the server exited while waiting for '$1'"
    sleep 0.1
  done
}

start() {
  : > "$WORK/serve.log"
  "${RUNNER[@]}" "$BIN" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --data-dir "$WORK/data" 2> "$WORK/serve.log" &
  SERVER=$!
  local t0=$SECONDS
  wait_log "metrics on http://" "$START_TIMEOUT_S"
  ADDR=$(sed -n 's/.*listening on \([0-9.:]*\) .*/\1/p' "$WORK/serve.log" | head -1)
  METRICS=$(sed -n 's#.*metrics on http://\([0-9.:]*\)/metrics.*#\1#p' "$WORK/serve.log" | head -1)
  [ -n "$ADDR" ] && [ -n "$METRICS" ] || fail "cannot read the addresses from the log"
  echo "started in $((SECONDS - t0)) s: $ADDR, metrics $METRICS"
  if [ ${#RUNNER[@]} -eq 0 ]; then
    echo "RSS at start: $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER/status")"
  fi
}

stop() {
  local t0=$SECONDS
  kill -TERM "$SERVER"
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while kill -0 "$SERVER" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "still running $STOP_TIMEOUT_S s after SIGTERM"
    sleep 0.1
  done
  local rc=0
  wait "$SERVER" || rc=$?
  SERVER=""
  [ "$rc" -eq 0 ] || fail "exit status $rc after SIGTERM (expected 0)"
  grep -q "stopped cleanly" "$WORK/serve.log" || fail "no 'stopped cleanly' in the log"
  echo "stopped cleanly in $((SECONDS - t0)) s"
}

scrape() {
  exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS##*:}"
  printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
  cat <&3
  exec 3<&-
}

metric() { scrape | awk -v s="$1" '$1 == s {print $2}'; }

consume_all() {
  eddy consume --topic smoke --from-beginning --server "$ADDR" --ca "$WORK/data/tls/ca.pem" \
    > "$WORK/consumed" || fail "consume failed"
  seq 1 "$RECORDS" | cmp -s - "$WORK/consumed" || fail "consumed records differ from produced ones"
}

echo "== smoke test of $BIN ${RUNNER[*]:+under ${RUNNER[*]}}"
eddy --help > /dev/null 2>&1 || true
start
seq 1 "$RECORDS" | eddy produce --topic smoke --batch 100 --server "$ADDR" \
  --ca "$WORK/data/tls/ca.pem" || fail "produce failed"
echo "produced $RECORDS records (durable)"
consume_all
echo "consumed them back"
[ "$(metric 'eddy_records_in_total{topic="smoke"}')" = "$RECORDS" ] || fail "metrics: records in"
[ "$(metric 'eddy_records_out_total{topic="smoke"}')" = "$RECORDS" ] || fail "metrics: records out"
scrape | tail -1 | grep -qx '# EOF' || fail "metrics: no # EOF"
echo "metrics count them"
kill -HUP "$SERVER"
wait_log "tls reloaded (requested)" 30
echo "SIGHUP reloaded the TLS files"
if [ ${#RUNNER[@]} -eq 0 ]; then
  echo "RSS after the smoke traffic: $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER/status")"
fi
stop
start
consume_all
echo "after a restart the records are all there"
stop
echo "smoke test passed"
