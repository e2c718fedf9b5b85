#!/usr/bin/env bash
# Fan-out A/B (issue 15): runs bench/fanout (target/release/fanout) against fresh `strom serve`
# processes of one or more binaries, alternating them per round, at the points of the issue.
#   bench/fanout.sh ROUNDS BIN [BIN...]      e.g. bench/fanout.sh 3 /tmp/strom-base target/release/strom
# Each run prints one JSON line (prefixed with the binary and the point) on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/bench/lib.sh"
ROUNDS="$1"; shift
FANOUT="$ROOT/target/release/fanout"
[ -x "$FANOUT" ] || (cd "$ROOT" && cargo build --release -p strom-fanout)
# name | fanout arguments
POINTS=(
  "ws-1k|--subscribers 1000"
  "ws-10k|--subscribers 10000"
  "ws-17.5k|--subscribers 17500"
  "sse-10k|--subscribers 10000 --mode sse"
  "ws-1000x15|--subscribers 15000 --topics 1000 --messages 10 --interval-ms 1000"
)
for round in $(seq "$ROUNDS"); do
  for point in "${POINTS[@]}"; do
    name="${point%%|*}"; args="${point#*|}"
    for bin in "$@"; do
      dir="$(mktemp -d /tmp/fanout-XXXX)"; kp="$(free_port)"; hp="$(free_port)"
      "$bin" serve --data-dir "$dir" --kafka-addr "127.0.0.1:$kp" --http-addr "127.0.0.1:$hp" \
        --kafka-max-connections 100 --http-max-connections 17800 --log-level warn >"$dir/log" 2>&1 &
      pid=$!
      wait_port "$hp"
      # shellcheck disable=SC2086
      out="$("$FANOUT" --http "127.0.0.1:$hp" --broker-pid "$pid" $args | tail -1)" || out='{"error":"fanout failed"}'
      echo "{\"round\":$round,\"point\":\"$name\",\"bin\":\"$bin\",\"result\":$out}"
      kill "$pid"; wait "$pid" 2>/dev/null || true
      rm -rf "$dir"
      sleep 2
    done
  done
done
