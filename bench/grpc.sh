#!/usr/bin/env bash
# The gRPC door against the HTTP door and the Kafka door on the same workloads, in one run:
# produce throughput of 1000-byte records, 100 per request, 4 concurrent callers (gRPC unary
# Produce, gRPC ProduceStream with 8 requests in flight per stream, HTTP POST of JSON records,
# `strom bench` over the Kafka protocol with batches of 100 and 8 in flight per producer), then
# the latency of a subscriber at 10,000 records/s (gRPC Subscribe, SSE, Kafka fetch by
# `strom bench --rate`). Each round runs a fresh release broker on a fresh data dir.
#
#   bench/grpc.sh [ROUNDS] [SECONDS]      (default 3 rounds of 10 s per workload)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/bench/lib.sh"
rounds="${1:-3}"
secs="${2:-10}"
cargo build --release -q -p strom -p strom-grpc-bench --manifest-path "$ROOT/Cargo.toml"
strom="$ROOT/target/release/strom"
gb="$ROOT/target/release/grpc-bench"
for r in $(seq "$rounds"); do
    dir="$(mktemp -d)"
    kp="$(free_port)"; hp="$(free_port)"; gp="$(free_port)"
    "$strom" serve --data-dir "$dir" --kafka-addr "127.0.0.1:$kp" --http-addr "127.0.0.1:$hp" \
        --grpc-addr "127.0.0.1:$gp" --log-level warn &
    pid=$!
    trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
    wait_port "$kp"; wait_port "$hp"; wait_port "$gp"
    echo "== round $r"
    "$gb" produce --addr "127.0.0.1:$gp" --topic "unary-$r" --seconds "$secs"
    "$gb" produce --addr "127.0.0.1:$gp" --topic "stream-$r" --stream --seconds "$secs"
    "$gb" http-produce --http "127.0.0.1:$hp" --topic "http-$r" --seconds "$secs"
    "$strom" bench --bootstrap "127.0.0.1:$kp" --topic "kafka-$r" --message-size 1000 --batch 100 \
        --producers 4 --consumers 0 --inflight 8 --duration-secs "$secs" 2>&1 | grep -E "^produce:" | sed 's/^/kafka /'
    "$gb" latency --addr "127.0.0.1:$gp" --topic "lat-grpc-$r" --rate 10000 --seconds "$secs"
    "$gb" latency --addr "127.0.0.1:$gp" --sse "127.0.0.1:$hp" --topic "lat-sse-$r" --rate 10000 --seconds "$secs"
    "$strom" bench --bootstrap "127.0.0.1:$kp" --topic "lat-kafka-$r" --message-size 1000 --batch 10 \
        --linger-ms 1 --rate 10000 --producers 1 --consumers 1 --duration-secs "$secs" 2>&1 | grep -E "^e2e latency" | sed 's/^/kafka /'
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
    trap - EXIT
done
