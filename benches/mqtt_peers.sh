#!/usr/bin/env bash
# eddy's MQTT listener beside Mosquitto, one Go load generator (Eclipse
# Paho's Go client, benches/peerbench) against both, in one run:
#
#   1. device fan-in: DEVICES connections, one QoS 1 reading (64 B) per
#      second each: PUBACK latency p50/p99 and the server's RSS;
#   2. one publisher, QoS 1, 1,000 messages (100 B) in flight: messages/s.
#
#   benches/mqtt_peers.sh [RUNS]     (default 3; medians, and the median of
#                                      same-run eddy/Mosquitto ratios)
#
# eddy acknowledges once the record is fsynced (`durable`, the default);
# Mosquitto runs as benches/peers.sh runs it, without persistence (its
# PUBACK means "in memory"). Both listen in plaintext on loopback (eddy's
# MQTT listener speaks TLS only off loopback; benches/peers.sh measures
# TLS fan-in against eddy's native protocol). eddy gets
# `mqtt.inflight_max = 1000` so that one connection may have 1,000 PUBLISHes
# waiting (the default, 64, would cap the publisher case; Mosquitto has no
# such bound for MQTT 3.1.1 publishers).
#
# EDDY_BIN (target/release/eddy; built when missing), FANIN_S (20),
# PUB_S (10), DEVICES (1000), MQTT_PORT (17540). Results: JSON lines in
# benches/mqtt_peers-results.jsonl, a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-3}
FANIN_S=${FANIN_S:-20}
PUB_S=${PUB_S:-10}
DEVICES=${DEVICES:-1000}
MQTT_PORT=${MQTT_PORT:-17540}
EDDY=${EDDY_BIN:-$ROOT/target/release/eddy}

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] || need+=(golang-github-nats-io-go-nats-dev)
[ -d /usr/share/gocode/src/github.com/eclipse/paho.mqtt.golang ] || need+=(golang-github-eclipse-paho.mqtt.golang-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
[ -x "$EDDY" ] || cargo build --release --quiet --bin eddy

WORK=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

GO111MODULE=off GOPATH="$WORK/go:/usr/share/gocode" GOCACHE="$WORK/go/cache" \
  go build -o "$WORK/peerbench" ./benches/peerbench
PEER=$WORK/peerbench

cat > "$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_connections -1
user root
EOF
cat > "$WORK/eddy.toml" <<EOF
[mqtt]
listen = "127.0.0.1:$MQTT_PORT"
inflight_max = 1000
EOF

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  return 1
}

start_server() {
  rm -rf "$WORK/data"
  case $1 in
    eddy) "$EDDY" serve --config "$WORK/eddy.toml" --listen 127.0.0.1:0 --data-dir "$WORK/data" \
            --no-kafka --no-metrics --log-level warn --max-connections-per-ip 20000 \
            2>"$WORK/server.log" &
          SERVER=$! ;;
    mosquitto) mosquitto -c "$WORK/mosquitto.conf" >"$WORK/server.log" 2>&1 &
          SERVER=$! ;;
  esac
  wait_port "$MQTT_PORT"
}

record() {  # scenario system run json
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
  python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(scenario=sys.argv[1], system=sys.argv[2], run=int(sys.argv[3])); print(json.dumps(d))' \
    "$@" >> "$WORK/results.jsonl"
  tail -1 "$WORK/results.jsonl" >&2
}

for run in $(seq "$RUNS"); do
  for system in eddy mosquitto; do
    start_server "$system"
    record "fan-in $DEVICES devices" "$system" "$run" "$("$PEER" mqtt-devices \
      -url "tcp://127.0.0.1:$MQTT_PORT" -connections "$DEVICES" -interval-ms 1000 \
      -duration-s "$FANIN_S" -server-pid "$SERVER")"
    start_server "$system"
    record "1 publisher, 1000 in flight" "$system" "$run" "$("$PEER" mqtt-publisher \
      -url "tcp://127.0.0.1:$MQTT_PORT" -inflight 1000 -duration-s "$PUB_S" -server-pid "$SERVER")"
  done
done

cp "$WORK/results.jsonl" "$ROOT/benches/mqtt_peers-results.jsonl"
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
print("| case | system | msgs/s | p50 ms | p99 ms | server RSS kB | errors |")
print("|---|---|---|---|---|---|---|")
for scenario in dict.fromkeys(r["scenario"] for r in rows):
    for system in ("eddy", "mosquitto"):
        rs = [r for r in rows if r["scenario"] == scenario and r["system"] == system]
        print(f"| {scenario} | {system} | {med(r['acked_per_s'] for r in rs):.0f} | "
              f"{med(r['p50_ms'] for r in rs):.2f} | {med(r['p99_ms'] for r in rs):.2f} | "
              f"{med(r['server_rss_kb'] for r in rs):.0f} | {sum(r['errors'] for r in rs)} |")
    pairs = [(a, b) for a in rows for b in rows if a["scenario"] == b["scenario"] == scenario
             and a["run"] == b["run"] and a["system"] == "eddy" and b["system"] == "mosquitto"]
    ratio = lambda k: med(a[k] / b[k] for a, b in pairs if b[k])
    print(f"| {scenario} | eddy/Mosquitto (median of same-run ratios) | "
          f"{ratio('acked_per_s'):.2f}× | {ratio('p50_ms'):.2f}× | {ratio('p99_ms'):.2f}× | "
          f"{ratio('server_rss_kb'):.2f}× | |")
PY
