#!/usr/bin/env bash
# The share-group (queue) workload of issue 13 on Strom, NATS JetStream and Redis Streams, on
# 127.0.0.1 free ports, in the same run: one partition (stream), MESSAGES records preloaded,
# then 1, 4 and 16 consumers take and acknowledge every record one by one (records acked per
# second), then the redelivery latency (release -> next delivery of the same record).
# Each run gets a fresh server; RUNS runs per cell, medians in a Markdown table on stdout
# (raw JSON lines in $OUT/raw.jsonl).
#
#   bench/queue-compare.sh                 # RUNS=3 MESSAGES=300000 SIZE=256 DURATION=5
#   CONSUMERS="16" SYSTEMS="strom nats" bench/queue-compare.sh
#
# Strom: `strom bench --share-group` (strom-client's share consumer: ShareFetch in a share
# session with the acks piggy-backed, explicit ACCEPT per record). NATS and Redis:
# `strom-bench-peers --workload queue` (crates/strom-bench-peers/src/queue.rs says how).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}; MESSAGES=${MESSAGES:-300000}; SIZE=${SIZE:-256}; DURATION=${DURATION:-5}
REDELIVERIES=${REDELIVERIES:-200}
CONSUMERS=${CONSUMERS:-"1 4 16"}
SYSTEMS=${SYSTEMS:-"strom nats redis"}
OUT=${OUT:-$(mktemp -d /tmp/strom-queue-compare.XXXXXX)}; mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

. "$ROOT/bench/lib.sh"
need nats-server nats-server
need redis-server redis-server

(cd "$ROOT" && cargo build --release -q -p strom -p strom-bench-peers)
PEERS="$ROOT/target/release/strom-bench-peers"
STROM="$ROOT/target/release/strom"

start_system() { # sys -> sets URL, DIR, CUR
  local sys=$1 port; port=$(free_port); DIR=$(mktemp -d "$OUT/$sys.XXXX")
  case $sys in
    redis) redis-server --port "$port" --bind 127.0.0.1 --dir "$DIR" --appendonly yes --appendfsync everysec --save '' >"$DIR/log" 2>&1 &
           CUR=$!; URL="redis://127.0.0.1:$port";;
    nats)  nats-server -a 127.0.0.1 -p "$port" -js -sd "$DIR" >"$DIR/log" 2>&1 &
           CUR=$!; URL="nats://127.0.0.1:$port";;
    strom) "$STROM" serve --data-dir "$DIR" --kafka-addr "127.0.0.1:$port" --http-addr off >"$DIR/log" 2>&1 &
           CUR=$!; URL="127.0.0.1:$port";;
  esac
  PIDS+=("$CUR"); wait_port "$port"
}

run_one() { # sys consumers
  case $1 in
    strom) "$STROM" bench --json --bootstrap "$URL" --share-group "sg$RANDOM" --topic "q$RANDOM" --partitions 1 \
             --consumers "$2" --messages "$MESSAGES" --message-size "$SIZE" --duration-secs "$DURATION" \
             --redeliveries "$REDELIVERIES" 2>/dev/null;;
    *)     "$PEERS" --json --system "$1" --url "$URL" --workload queue --consumers "$2" --messages "$MESSAGES" \
             --message-size "$SIZE" --duration-secs "$DURATION" --redeliveries "$REDELIVERIES" 2>/dev/null;;
  esac
}

for c in $CONSUMERS; do
  for r in $(seq "$RUNS"); do
    # Systems alternate within a round, so that a noisy neighbour hits them alike.
    for sys in $SYSTEMS; do
      start_system "$sys" || continue
      if line=$(run_one "$sys" "$c"); then
        echo "{\"sys\":\"$sys\",\"consumers\":$c,\"run\":$r,\"result\":$line}" >>"$OUT/raw.jsonl"
      else
        echo "{\"sys\":\"$sys\",\"consumers\":$c,\"run\":$r,\"error\":true}" >>"$OUT/raw.jsonl"
      fi
      kill "$CUR" 2>/dev/null; wait "$CUR" 2>/dev/null || true
      rm -rf "$DIR"
    done
  done
done

python3 - "$OUT/raw.jsonl" <<'PY'
import json, sys, statistics as st
rows = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    rows.setdefault((d["consumers"], d["sys"]), []).append(d.get("result"))
print("| consumers (1 partition) | system | runs ok | acked/s (median) | acked/s (runs) | redelivery p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|---|---|")
for (c, s), rs in sorted(rows.items()):
    ok = [r for r in rs if r and r["accepted"] > 0]
    if not ok:
        print(f"| {c} | {s} | 0/{len(rs)} | failed | | | | |"); continue
    m = lambda f: st.median(f(r) for r in ok)
    runs = " / ".join(f"{r['acked_per_s']:,.0f}" for r in ok)
    print(f"| {c} | {s} | {len(ok)}/{len(rs)} | {m(lambda r: r['acked_per_s']):,.0f} | {runs} | "
          f"{m(lambda r: r['redelivery_latency_ms']['p50']):.3f} | {m(lambda r: r['redelivery_latency_ms']['p99']):.3f} | "
          f"{m(lambda r: r['redelivery_latency_ms']['max']):.3f} |")
PY
echo "raw results: $OUT/raw.jsonl" >&2
