#!/usr/bin/env bash
# Soak: an hour of durable ingest at 50,000 records/s while a consumer group
# follows and a mirror link forwards everything to a second eddy, with the
# server's RSS sampled over time. Passes when nothing failed and nothing was
# lost: every acknowledged record is stored (log end = records
# acknowledged), consumed (the group's committed offsets reach the log end)
# and mirrored (the upstream topic's log end is the same, the link reports
# no drops), errors_total stayed 0, and the server's RSS did not grow: the
# mean RSS of the last third of the samples is at most SOAK_RSS_GROWTH_MAX
# (default 0.10, i.e. +10%) above the mean of the middle third. The first
# third is left out: caches (sled's, the allocator's) fill up then. 10%:
# the hour reported in README.md moved within 95-102 MiB (7%) once warm;
# a leak of one record's worth per record would be +100s of MB. Needs at
# least 6 samples (SOAK_SECONDS / SOAK_SAMPLE_S). Not run in CI (an hour).
#
#   benches/soak.sh                           (3600 s at 50000 records/s)
#   SOAK_SECONDS=600 SOAK_RATE=50000 SOAK_SAMPLE_S=30 benches/soak.sh
#   SOAK_OUT=FILE                             (the samples, one line each;
#                                              default target/soak-<time>.txt)
#   EDDY_BIN=path/to/eddy                     (another build, e.g. the static
#                                              musl one from packaging/)
#
# Release build, temp data dirs, port 17730 (metrics 17731, upstream 17732).
# Producer: `eddy bench produce --connections 4 --batch 500 --rate R`
# (paced); consumer: `eddy consume --group soak --commit-every 10000`
# (output to /dev/null); mirror: `--hub-id gw --mirror up=eddy://…` into
# topic `gw.soak` of the upstream eddy.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-3600}
RATE=${SOAK_RATE:-50000}
SAMPLE=${SOAK_SAMPLE_S:-60}
PORT=${EDDY_BENCH_PORT:-17730}
GROWTH_MAX=${SOAK_RSS_GROWTH_MAX:-0.10}
[ $((SECONDS_TOTAL / SAMPLE)) -ge 6 ] ||
  { echo "SOAK_SECONDS / SOAK_SAMPLE_S must give at least 6 samples for the RSS growth check" >&2; exit 2; }
mkdir -p target
OUT=$(realpath -m "${SOAK_OUT:-target/soak-$(date +%Y%m%d-%H%M%S).txt}")
if [ -z "${EDDY_BIN:-}" ]; then cargo build --release --quiet; fi
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
# A copy: a rebuild during the hour must not change the binary under test.
cp "${EDDY_BIN:-target/release/eddy}" "$WORK/eddy"
BIN=$WORK/eddy
C=(--server "127.0.0.1:$PORT" --ca "$WORK/data/tls/ca.pem")
UP_PORT=$((PORT + 2))
UP=(--server "127.0.0.1:$UP_PORT" --ca "$WORK/up/tls/ca.pem")
wait_up() { # data dir, port
  for _ in $(seq 100); do
    [ -s "$1/tls/ca.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server on port $2 did not start" >&2; exit 1
}

"$BIN" serve --listen "127.0.0.1:$UP_PORT" --data-dir "$WORK/up" --log-level warn --no-metrics \
  2>"$WORK/upstream.log" &
UPSTREAM=$!
wait_up "$WORK/up" "$UP_PORT"
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level warn \
  --metrics-listen "127.0.0.1:$((PORT + 1))" --hub-id gw \
  --mirror "up=eddy://127.0.0.1:$UP_PORT" --mirror-ca "$WORK/up/tls/ca.pem" 2>"$WORK/serve.log" &
SERVER=$!
wait_up "$WORK/data" "$PORT"
# Retention keeps the disk in a steady state (an hour at 50,000 records/s
# is ~18 GB of batches, twice with the upstream); it never removes what
# the link has not forwarded. RETAIN: bytes kept per partition.
RETAIN=${SOAK_RETAIN_BYTES:-134217728}
"$BIN" topics create soak --partitions 8 --config "retention.bytes=$RETAIN" "${C[@]}" >/dev/null

"$BIN" consume --group soak --topic soak --wait-for-topic --from-beginning --commit-every 10000 "${C[@]}" \
  >/dev/null 2>"$WORK/consume.log" &
CONSUMER=$!
"$BIN" bench produce "${C[@]}" --keep-topics --topic soak --connections 4 --batch 500 --record-bytes 100 \
  --acks durable --rate "$RATE" --duration-s "$SECONDS_TOTAL" --json >"$WORK/produce.out" 2>&1 &
PRODUCER=$!

metric() { curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk -v m="$1" 'index($1, m) == 1 {s += $2} END {print s + 0}'; }
mirror_lag() { "$BIN" mirror status --json "${C[@]}" | python3 -c 'import json,sys; print(sum(p["lag_records"] for l in json.load(sys.stdin) for p in l["partitions"]))'; }
lag() { "$BIN" groups describe soak --json "${C[@]}" | python3 -c 'import json,sys; print(sum(p["lag"] or 0 for p in json.load(sys.stdin)["partitions"]))'; }

# The upstream topic is created by the link: give it the same retention.
for _ in $(seq 300); do
  "$BIN" topics alter gw.soak --config "retention.bytes=$RETAIN" "${UP[@]}" >/dev/null 2>&1 && break
  sleep 0.1
done
# The time series: printed and written to $OUT as it is sampled.
echo "samples: $OUT"
echo "t_s rss_kB records_in group_lag mirror_lag errors disk_MB upstream_disk_MB threads" | tee "$OUT"
START=$(date +%s)
while kill -0 "$PRODUCER" 2>/dev/null; do
  sleep "$SAMPLE"
  kill -0 "$PRODUCER" 2>/dev/null || break
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$SERVER/status")
  errors=$(curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk '/^eddy_errors_total/ && !/TopicExists/ {s += $2} END {print s + 0}')
  echo "$(( $(date +%s) - START )) $rss $(metric eddy_records_in_total) $(lag) $(mirror_lag) $errors" \
    "$(du -sm "$WORK/data" | cut -f1) $(du -sm "$WORK/up" | cut -f1) $threads" | tee -a "$OUT"
done
wait "$PRODUCER" || { echo "producer failed:"; cat "$WORK/produce.out"; exit 1; }
ACKED=$(tail -1 "$WORK/produce.out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["records"])')
# The consumer catches up, then commits and leaves on SIGTERM.
for _ in $(seq 600); do [ "$(lag)" = 0 ] && break; sleep 0.2; done
kill -TERM "$CONSUMER"; wait "$CONSUMER" || true
for _ in $(seq 600); do [ "$(mirror_lag)" = 0 ] && break; sleep 0.2; done
read -r MIRRORED DROPPED < <("$BIN" mirror status --json "${C[@]}" | python3 -c '
import json,sys
links = json.load(sys.stdin)
print(sum(p["mirrored"] for l in links for p in l["partitions"]), sum(l["dropped_records"] for l in links))')
UPSTREAM_END=$("$BIN" topics describe gw.soak --json "${UP[@]}" | python3 -c '
import json,sys
print(sum(p["log_end"] for p in json.load(sys.stdin)["watermarks"]))')
read -r END COMMITTED < <("$BIN" groups describe soak --json "${C[@]}" | python3 -c '
import json,sys
d = json.load(sys.stdin)
print(sum(p["high_watermark"] for p in d["partitions"]), sum(p["committed"] or 0 for p in d["partitions"]))')
# Error responses other than the one expected: `bench produce` creates its
# topic and is told TopicExists.
ERRORS=$(curl -s "http://127.0.0.1:$((PORT + 1))/metrics" \
  | awk '/^eddy_errors_total/ && !/TopicExists/ {s += $2} END {print s + 0}')
curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk '/^eddy_errors_total/ && $2 > 0'
# No growth: the last third of the RSS samples against the middle third.
RSS_OK=true
python3 - "$OUT" "$GROWTH_MAX" <<'PY' || RSS_OK=false
import sys
rows = [line.split() for line in open(sys.argv[1]) if line[:1].isdigit()]
rss = [int(r[1]) for r in rows]
growth_max = float(sys.argv[2])
third = len(rss) // 3
if third < 2:
    print(f"RSS: {len(rss)} samples, too few for the growth check (at least 6)")
    sys.exit(1)
middle, last = rss[third:2 * third], rss[2 * third:]
mean_middle, mean_last = sum(middle) / len(middle), sum(last) / len(last)
growth = mean_last / mean_middle - 1
ok = growth <= growth_max
print(f"RSS kB: first {rss[0]}, min {min(rss)}, max {max(rss)}, last {rss[-1]}; "
      f"mean of the middle third {mean_middle:.0f}, of the last third {mean_last:.0f}: "
      f"{growth:+.1%} (at most {growth_max:+.0%}): {'no growth' if ok else 'GROWTH'}")
sys.exit(0 if ok else 1)
PY
echo "acknowledged $ACKED, stored (log end) $END, consumed (committed) $COMMITTED, mirrored $MIRRORED (upstream log end $UPSTREAM_END, dropped $DROPPED), error responses $ERRORS; samples in $OUT"
[ "$ACKED" = "$END" ] && [ "$END" = "$COMMITTED" ] && [ "$END" = "$MIRRORED" ] && [ "$END" = "$UPSTREAM_END" ] \
  && [ "$DROPPED" = 0 ] && [ "$ERRORS" = 0 ] && $RSS_OK && echo "soak: PASS" || { echo "soak: FAIL"; exit 1; }
kill "$SERVER" "$UPSTREAM"; wait "$SERVER" "$UPSTREAM" 2>/dev/null || true
