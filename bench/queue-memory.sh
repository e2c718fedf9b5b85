#!/usr/bin/env bash
# Broker memory with a queue backlog and with pending delayed records (issue 13's "memory
# flat" check). For each BACKLOGS size: a fresh release `strom serve`, `strom bench
# --share-group` preloads that many records on 1 partition and CONSUMERS share consumers
# accept for DURATION s (the backlog stays far larger than what they take); the broker's RSS
# is sampled every 100 ms during the share phase (after the preload), and its peak printed.
# Then DELAYED records with `strom.delay.ms: 3600000` (all pending) are produced with
# confluent-kafka, and the broker's RSS measured when idle, after a restart with all of them
# still pending.
#
#   bench/queue-memory.sh                       # BACKLOGS="1000000 10000000" DELAYED=1000000
#   BACKLOGS=100000 DELAYED=0 bench/queue-memory.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BACKLOGS=${BACKLOGS:-"1000000 10000000"}
CONSUMERS=${CONSUMERS:-16}
DURATION=${DURATION:-10}
SIZE=${SIZE:-100}
DELAYED=${DELAYED:-1000000}
STROM="$ROOT/target/release/strom"
PY="${STROM_VENV:-$ROOT/.venv}/bin/python"
(cd "$ROOT" && cargo build --release -q -p strom)

. "$ROOT/bench/lib.sh"
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
PID=
DIR=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; [ -n "$DIR" ] && rm -rf "$DIR"; }
trap cleanup EXIT
start() {
  PORT=$(free_port)
  "$STROM" serve --data-dir "$DIR" --kafka-addr "127.0.0.1:$PORT" --http-addr off >>"$DIR.log" 2>&1 &
  PID=$!
  wait_port "$PORT"
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

echo "| backlog (records of $SIZE B) | consumers | acked/s | broker RSS idle | after the preload | peak during the share phase | share state on disk |"
echo "|---|---|---|---|---|---|---|"
for n in $BACKLOGS; do
  DIR=$(mktemp -d /tmp/strom-qmem.XXXXXX)
  start
  idle=$(rss_kb "$PID")
  out="$DIR.bench"
  "$STROM" bench --json --bootstrap "127.0.0.1:$PORT" --share-group g --topic q --partitions 1 \
    --consumers "$CONSUMERS" --messages "$n" --message-size "$SIZE" --duration-secs "$DURATION" \
    --redeliveries 0 >"$out" 2>"$DIR.bench.err" &
  bench=$!
  # The share phase begins when the bench says its members joined (the preload is over).
  peak=0
  loaded=
  while kill -0 "$bench" 2>/dev/null; do
    if grep -q "members joined" "$DIR.bench.err" 2>/dev/null; then
      r=$(rss_kb "$PID"); [ "$r" -gt "$peak" ] && peak=$r
      [ -n "$loaded" ] || loaded=$r
    fi
    sleep 0.1
  done
  wait "$bench"
  rate=$("$PY" -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(round(d["acked_per_s"]))' "$out" 2>/dev/null || echo "?")
  share=$(du -sk "$DIR/.strom/share" | cut -f1)
  echo "| $n | $CONSUMERS | $rate | $((idle / 1024)) MB | $((${loaded:-0} / 1024)) MB | $((peak / 1024)) MB | $share KB |"
  stop; rm -rf "$DIR" "$DIR".*; DIR=
  PID=
done

if [ "$DELAYED" -gt 0 ]; then
  DIR=$(mktemp -d /tmp/strom-qmem.XXXXXX)
  start
  before=$(rss_kb "$PID")
  "$PY" - "$PORT" "$DELAYED" <<'EOF'
import sys
from confluent_kafka import Producer
port, n = sys.argv[1], int(sys.argv[2])
p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 20, "batch.num.messages": 10000,
              "queue.buffering.max.messages": 1000000})
errors = []
def cb(err, _msg):
    if err:
        errors.append(err)
for i in range(n):
    while True:
        try:
            p.produce("delayed", value=b"x" * 100, headers=[("strom.delay.ms", b"3600000")], on_delivery=cb)
            break
        except BufferError:
            p.poll(0.05)
    if i % 10000 == 0:
        p.poll(0)
p.flush(120)
assert not errors, errors[:3]
EOF
  after=$(rss_kb "$PID")
  stop
  start
  sleep 2
  restarted=$(rss_kb "$PID")
  disk=$(du -sk "$DIR/.strom/delay" | cut -f1)
  echo
  echo "| delayed records pending | broker RSS before | after producing them | after a restart, all pending | delay store on disk |"
  echo "|---|---|---|---|---|"
  echo "| $DELAYED | $((before / 1024)) MB | $((after / 1024)) MB | $((restarted / 1024)) MB | $((disk / 1024)) MB |"
  stop
fi
