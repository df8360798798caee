#!/usr/bin/env bash
# End-to-end check of the Cortex-M example: the firmware runs in QEMU
# (MPS2-AN386), its UART is a TCP connection to a plaintext eddy, and eddy
# must receive at least READINGS readings from it within TIMEOUT_S.
#
#   firmware-examples/cortex-m-sensor/qemu-smoke.sh EDDY_BINARY
set -euo pipefail
EDDY=$1
READINGS=${READINGS:-3}
TIMEOUT_S=${TIMEOUT_S:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
FW=$HERE/../target/thumbv7em-none-eabihf/release/cortex-m-sensor
WORK=$(mktemp -d)
SERVER=""; QEMU=""
cleanup() {
  [ -n "$QEMU" ] && kill "$QEMU" 2>/dev/null || true
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$EDDY" serve --insecure-plaintext --listen 127.0.0.1:0 --data-dir "$WORK/data" 2>"$WORK/serve.log" &
SERVER=$!
addr=""
for _ in $(seq 200); do
  addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/serve.log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { echo "eddy did not start"; cat "$WORK/serve.log"; exit 1; }

qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -serial "tcp:$addr" -kernel "$FW" >"$WORK/qemu.log" 2>&1 &
QEMU=$!

deadline=$((SECONDS + TIMEOUT_S))
while [ $SECONDS -lt $deadline ]; do
  got=$("$EDDY" consume --plaintext --server "$addr" --topic telemetry --max "$READINGS" 2>/dev/null | wc -l || true)
  if [ "$got" -ge "$READINGS" ]; then
    echo "the Cortex-M firmware in QEMU sent $got readings to eddy:"
    "$EDDY" consume --plaintext --server "$addr" --topic telemetry --max "$READINGS" --format json
    exit 0
  fi
  sleep 0.5
done
echo "no $READINGS readings from the firmware within $TIMEOUT_S s"
cat "$WORK/serve.log" "$WORK/qemu.log"
exit 1
