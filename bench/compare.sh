#!/usr/bin/env bash
# Runs the issue-6 workloads against NATS JetStream, Redis Streams and (if its `serve`
# command exists) Strom, on 127.0.0.1 free ports, RUNS times each, and prints a Markdown
# table of medians to stdout (raw JSON lines go to $OUT/raw.jsonl).
#
#   bench/compare.sh            # RUNS=3 DURATION=5 WARMUP=1 by default
#   SYSTEMS="redis nats" bench/compare.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}
SYSTEMS=${SYSTEMS:-"strom nats redis"}
OUT=${OUT:-$(mktemp -d /tmp/strom-compare.XXXXXX)}; mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

. "$ROOT/bench/lib.sh"
need nats-server nats-server
need redis-server redis-server

(cd "$ROOT" && cargo build --release -q -p strom-bench-peers -p strom-client)
(cd "$ROOT" && cargo build --release -q -p strom) || echo "strom did not build; skipping it" >&2
PEERS="$ROOT/target/release/strom-bench-peers"
STROMCLI="$ROOT/target/release/strom-cli"
STROM="$ROOT/target/release/strom"

# name | partitions producers consumers size rate keys
# Fixed-rate runs send a batch (Strom) / pipeline (Redis) at the latest LINGER_MS after its
# first record was due; NATS publishes every message when it is due.
LINGER_MS=${LINGER_MS:-1}
WORKLOADS=(
  "1p-1KB-max|1 1 1 1024 0 0"
  "1p-1KB-50k|1 1 1 1024 50000 0"
  "16p-4prod-4cons-1KB-max|16 4 4 1024 0 0"
  "16p-1prod-4cons-1KB-max|16 1 4 1024 0 0"
  "16p-4prod-4cons-1KB-max-keyed|16 4 4 1024 0 1000"
  "1p-100B-max|1 1 1 100 0 0"
)
if [ -n "${ONLY:-}" ]; then  # e.g. ONLY="1p-1KB-max 1p-1KB-50k"
  sel=(); for w in "${WORKLOADS[@]}"; do [[ " $ONLY " == *" ${w%%|*} "* ]] && sel+=("$w"); done
  WORKLOADS=("${sel[@]}")
fi

start_system() { # sys durability -> sets URL / BOOT, appends PIDS
  local sys=$1 dur=$2 dir; dir=$(mktemp -d "$OUT/$sys-$dur.XXXX"); DIR=$dir
  case $sys in
    redis)
      local port; port=$(free_port)
      local fs=everysec; [ "$dur" = fsync ] && fs=always
      redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync "$fs" --save '' >"$dir/log" 2>&1 &
      PIDS+=($!); CUR=$!; wait_port "$port" || return 1; URL="redis://127.0.0.1:$port";;
    nats)
      [ "$dur" = fsync ] && return 1   # nats-server 2.9 has no per-write fsync (sync_interval is 2.10+)
      local port; port=$(free_port)
      nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir" >"$dir/log" 2>&1 &
      PIDS+=($!); CUR=$!; wait_port "$port" || return 1; URL="nats://127.0.0.1:$port";;
    strom)
      "$STROM" serve --help 2>&1 | grep -q -- --kafka-addr || return 1
      local port; port=$(free_port)
      "$STROM" serve --data-dir "$dir" --kafka-addr "127.0.0.1:$port" >"$dir/log" 2>&1 &
      PIDS+=($!); CUR=$!; wait_port "$port" || return 1; URL="127.0.0.1:$port";;
  esac
}

run_one() { # sys durability workload-spec
  local sys=$1 dur=$2 p pr co sz rate keys; read -r p pr co sz rate keys <<<"$3"
  case $sys in
    strom)
      local cfg=(); [ "$dur" = fsync ] && cfg=(--topic-config flush.messages=1)
      "$STROMCLI" bench --json --bootstrap "$URL" --topic "b$RANDOM" --partitions "$p" --producers "$pr" \
        --consumers "$co" --message-size "$sz" --rate "$rate" --batch 1000 --linger-ms "$LINGER_MS" --keys "$keys" \
        --duration-secs "$DURATION" --warmup-secs "$WARMUP" "${cfg[@]}" 2>/dev/null;;
    *)
      "$PEERS" --json --system "$sys" --url "$URL" --partitions "$p" --producers "$pr" --consumers "$co" \
        --message-size "$sz" --rate "$rate" --batch 256 --linger-ms "$LINGER_MS" --keys "$keys" \
        --duration-secs "$DURATION" --warmup-secs "$WARMUP" 2>/dev/null;;
  esac
}

for sys in $SYSTEMS; do
  for dur in os fsync; do
    for w in "${WORKLOADS[@]}"; do
      name=${w%%|*}; spec=${w#*|}
      for r in $(seq "$RUNS"); do
        # A fresh server per run so runs don't share state.
        start_system "$sys" "$dur" || continue 2
        if line=$(run_one "$sys" "$dur" "$spec"); then
          echo "{\"sys\":\"$sys\",\"durability\":\"$dur\",\"workload\":\"$name\",\"run\":$r,\"result\":$line}" >>"$OUT/raw.jsonl"
        else
          echo "{\"sys\":\"$sys\",\"durability\":\"$dur\",\"workload\":\"$name\",\"run\":$r,\"error\":true}" >>"$OUT/raw.jsonl"
        fi
        kill "$CUR" 2>/dev/null; wait "$CUR" 2>/dev/null || true
        rm -rf "$DIR"  # each run writes GBs: keep the disk from filling up
      done
    done
  done
done

python3 - "$OUT/raw.jsonl" <<'PY'
import json, sys, statistics as st
rows = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    rows.setdefault((d["workload"], d["sys"], d["durability"]), []).append(d.get("result"))
print("| workload | system | durability | runs ok | produce msg/s | produce MB/s | consume MB/s | e2e p50 ms | e2e p99 ms | e2e p99.9 ms | e2e max ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (w, s, du), rs in sorted(rows.items()):
    ok = [r for r in rs if r]
    if not ok:
        print(f"| {w} | {s} | {du} | 0/{len(rs)} | failed | | | | | | |"); continue
    m = lambda f: st.median(f(r) for r in ok)
    print(f"| {w} | {s} | {du} | {len(ok)}/{len(rs)} | {m(lambda r: r['produce_msgs_per_s']):,.0f} | {m(lambda r: r['produce_mb_per_s']):.1f} | "
          f"{m(lambda r: r['consume_mb_per_s']):.1f} | {m(lambda r: r['e2e_latency_ms']['p50']):.2f} | {m(lambda r: r['e2e_latency_ms']['p99']):.2f} | "
          f"{m(lambda r: r['e2e_latency_ms']['p999']):.2f} | {m(lambda r: r['e2e_latency_ms']['max']):.2f} |")
PY
echo "raw results: $OUT/raw.jsonl" >&2
