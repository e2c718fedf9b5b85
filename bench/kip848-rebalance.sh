#!/usr/bin/env bash
# KIP-848 against the classic protocol, same broker, same run: a member joining a stable
# 50-member group, time to its first record (bench/kip848_rebalance.py), medians of RUNS runs.
# Twice: with every heartbeat interval at its default (broker: adaptive, 10 ms per member of the
# group from 500 to 5000 ms, so 500 ms for 51 members; librdkafka heartbeat.interval.ms 3000), then
# with both set to 500 ms.
#   bench/kip848-rebalance.sh [STROM_BIN]   (RUNS=3 MEMBERS=50)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
BIN=${1:-$ROOT/target/release/strom}
RUNS=${RUNS:-3}
MEMBERS=${MEMBERS:-50}
PY=$ROOT/.venv/bin/python
for mode in default fast; do
  DIR=$(mktemp -d)
  PORT=$(free_port)
  args=()
  hb=3000
  if [ "$mode" = fast ]; then args=(--group-consumer-heartbeat-interval-ms 500); hb=500; fi
  "$BIN" serve --data-dir "$DIR" --kafka-addr 127.0.0.1:"$PORT" --log-level warn "${args[@]}" &
  PID=$!
  wait_port "$PORT"
  echo "# $mode: broker ${args[*]:-(defaults)}, classic heartbeat.interval.ms $hb"
  "$PY" "$ROOT/bench/kip848_rebalance.py" --bootstrap 127.0.0.1:"$PORT" --members "$MEMBERS" \
    --runs "$RUNS" --classic-heartbeat-ms "$hb" 2> >(grep -v '^%' >&2)
  kill "$PID"; wait "$PID" 2>/dev/null || true
  rm -rf "$DIR"
done
