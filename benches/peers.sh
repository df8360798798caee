#!/usr/bin/env bash
# eddy side by side with the brokers operators know, in one run:
#
#   1. durable ingest, 100-byte records, 1 and 8 producers, sync (one record
#      per request, wait for each ack) and windowed (W records unacknowledged
#      per producer, like an async publisher; W = 64 and 4000, nats.go's
#      default for PublishAsync): eddy `durable` and `received` vs NATS
#      JetStream (file store, publish acks). Windowed, eddy's side
#      publishes each record through the client's batching producer
#      (`--producer`: batches per partition, several in flight), NATS's
#      through PublishAsync with PublishAsyncMaxPending(W);
#   2. device fan-in, 1,000 and 10,000 connections, one reading per second
#      each: eddy (`durable` and `received`) vs Mosquitto (QoS 1).
#
#   benches/peers.sh [RUNS]        (default 3 runs of every case)
#
# Every case runs against a fresh server with a fresh data dir; eddy and its
# peers take turns (eddy, peer, eddy, peer …) so machine noise hits both;
# the report gives medians and the median of same-run eddy/peer ratios.
# Everything speaks TLS (eddy's dev CA and certificate for all servers).
# Peers are installed with apt-get when missing (Debian 12: nats-server
# 2.9, mosquitto 2.0, Go 1.19 and the Go clients of NATS and Paho).
# Writes BENCHMARKS.md and benches/peers.svg, and prints the table.
#
# Ports: EDDY_PORT (17510), NATS_PORT (17520), MQTT_PORT (17530).
# Durations: INGEST_S (5) per ingest run, FANIN_S (20) per fan-in window.
# Cases: WINDOWS ("1 64 4000"), FANIN_SIZES ("1000 10000").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-3}
INGEST_S=${INGEST_S:-5}
FANIN_S=${FANIN_S:-20}
EDDY_PORT=${EDDY_PORT:-17510}
NATS_PORT=${NATS_PORT:-17520}
MQTT_PORT=${MQTT_PORT:-17530}
FANIN_SIZES=${FANIN_SIZES:-"1000 10000"}
WINDOWS=${WINDOWS:-"1 64 4000"}

need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] || need+=(golang-github-nats-io-go-nats-dev)
[ -d /usr/share/gocode/src/github.com/eclipse/paho.mqtt.golang ] || need+=(golang-github-eclipse-paho.mqtt.golang-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
python3 -c 'import matplotlib' 2>/dev/null || pip install --quiet matplotlib

WORK=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building eddy (release) and peerbench" >&2
cargo build --release --quiet
# The code under test, recorded in every result line: the report names it,
# not whatever HEAD is when the report is rendered again later.
EDDY_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo "+uncommitted")
export EDDY_COMMIT
EDDY=$ROOT/target/release/eddy
GO111MODULE=off GOPATH="$WORK/go:/usr/share/gocode" GOCACHE="$WORK/go/cache" \
  go build -o "$WORK/peerbench" ./benches/peerbench
PEER=$WORK/peerbench

# One descriptor per connection: servers and load generators alike.
ulimit -n "$(ulimit -Hn)"

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  return 1
}

# eddy's dev certificates serve every server, so all of them speak TLS.
"$EDDY" serve --listen "127.0.0.1:$EDDY_PORT" --data-dir "$WORK/certs" --log-level warn 2>/dev/null &
SERVER=$!
wait_port "$EDDY_PORT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
TLS=$WORK/certs/tls
cat > "$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_connections -1
cafile $TLS/ca.pem
certfile $TLS/server.pem
keyfile $TLS/server.key
user root
EOF

start_server() {
  rm -rf "$WORK/data"
  case $1 in
    # Every simulated device connects from 127.0.0.1: lift the per-source
    # limit (1,000 by default) as Mosquitto and NATS have none.
    eddy) "$EDDY" serve --listen "127.0.0.1:$EDDY_PORT" --data-dir "$WORK/data" --log-level warn \
            --cert "$TLS/server.pem" --key "$TLS/server.key" --max-connections-per-ip 20000 \
            2>"$WORK/server.log" &
          SERVER=$!; wait_port "$EDDY_PORT" ;;
    nats) nats-server -js -sd "$WORK/data" -a 127.0.0.1 -p "$NATS_PORT" \
            --tls --tlscert "$TLS/server.pem" --tlskey "$TLS/server.key" >"$WORK/server.log" 2>&1 &
          SERVER=$!; wait_port "$NATS_PORT" ;;
    mosquitto) mosquitto -c "$WORK/mosquitto.conf" >"$WORK/server.log" 2>&1 &
          SERVER=$!; wait_port "$MQTT_PORT" ;;
  esac
  CPU0=$(awk '{print $14+$15}' "/proc/$SERVER/stat")
}

# Appends the load generator's JSON, tagged and with the server's peak RSS
# and CPU seconds, to results.jsonl.
record() {
  local scenario=$1 system=$2 run=$3 json=$4
  local rss cpu1
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
  cpu1=$(awk '{print $14+$15}' "/proc/$SERVER/stat")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
  python3 - "$scenario" "$system" "$run" "$rss" "$CPU0" "$cpu1" "$json" >> "$WORK/results.jsonl" <<'PY'
import json, os, sys
scenario, system, run, rss, cpu0, cpu1, line = sys.argv[1:]
d = json.loads(line)
tick = os.sysconf("SC_CLK_TCK")
d.update(scenario=scenario, system=system, run=int(run), server_rss_peak_kb=int(rss),
         server_cpu_s=(int(cpu1) - int(cpu0)) / tick, eddy_commit=os.environ["EDDY_COMMIT"])
print(json.dumps(d))
PY
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("  %-28s %-16s run %s: %s/s  p50 %.3f ms  p99 %.3f ms  rss %d kB" % (d["scenario"], d["system"], d["run"], round(d.get("records_per_s", d.get("acked_per_s", 0))), d["p50_ms"], d["p99_ms"], d["server_rss_peak_kb"]))' "$(tail -1 "$WORK/results.jsonl")" >&2
}

eddy_ingest() {  # producers window acks
  local shape=(--batch 1 --window 1)
  if [ "$2" != 1 ]; then shape=(--producer --linger-ms 0 --window "$2"); fi
  "$EDDY" bench produce --server "127.0.0.1:$EDDY_PORT" --ca "$TLS/ca.pem" --connections "$1" \
    "${shape[@]}" --acks "$3" --record-bytes 100 --partitions 1 --duration-s "$INGEST_S" --json | tail -1
}

nats_ingest() {  # producers window
  "$PEER" nats-ingest -url "tls://127.0.0.1:$NATS_PORT" -ca "$TLS/ca.pem" -producers "$1" \
    -window "$2" -record-bytes 100 -duration-s "$INGEST_S"
}

eddy_devices() {  # connections acks
  "$EDDY" bench devices --server "127.0.0.1:$EDDY_PORT" --ca "$TLS/ca.pem" --connections "$1" \
    --interval-ms 1000 --duration-s "$FANIN_S" --acks "$2" --server-pid "$SERVER" --json | tail -1
}

mqtt_devices() {  # connections
  "$PEER" mqtt-devices -url "ssl://127.0.0.1:$MQTT_PORT" -ca "$TLS/ca.pem" -connections "$1" \
    -interval-ms 1000 -duration-s "$FANIN_S" -server-pid "$SERVER"
}

echo "durable ingest: $RUNS runs of $INGEST_S s per case" >&2
for run in $(seq "$RUNS"); do
  for producers in 1 8; do
    for window in $WINDOWS; do
      mode=$([ "$window" = 1 ] && echo sync || echo "window $window")
      scenario="ingest $producers prod, $mode"
      start_server eddy; record "$scenario" "eddy durable" "$run" "$(eddy_ingest "$producers" "$window" durable)"
      start_server nats; record "$scenario" "NATS JetStream" "$run" "$(nats_ingest "$producers" "$window")"
      start_server eddy; record "$scenario" "eddy received" "$run" "$(eddy_ingest "$producers" "$window" received)"
    done
  done
done

echo "device fan-in: $RUNS runs of $FANIN_S s per case" >&2
for run in $(seq "$RUNS"); do
  for n in $FANIN_SIZES; do
    scenario="fan-in $n devices"
    start_server eddy; record "$scenario" "eddy durable" "$run" "$(eddy_devices "$n" durable)"
    start_server mosquitto; record "$scenario" "Mosquitto QoS1" "$run" "$(mqtt_devices "$n")"
    start_server eddy; record "$scenario" "eddy received" "$run" "$(eddy_devices "$n" received)"
  done
done

cp "$WORK/results.jsonl" "$ROOT/benches/peers-results.jsonl"
python3 benches/peers_report.py "$ROOT/benches/peers-results.jsonl" \
  --runs "$RUNS" --ingest-s "$INGEST_S" --fanin-s "$FANIN_S" \
  --markdown "$ROOT/BENCHMARKS.md" --chart "$ROOT/benches/peers.svg"
