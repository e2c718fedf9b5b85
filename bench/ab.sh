#!/usr/bin/env bash
# A/B of two `strom` builds on the Kafka door's 1-partition, 1 KB workloads, in alternating
# rounds (A B, B A, A B, ...) so that both sides see the machine in the same states.
#
# Each round starts `strom serve` from the build under test on a fresh data dir and runs, with
# the same build's `strom bench`:
#   short-prod   produce only, 3 M records (~3.1 GB), no warm-up
#   pc-5s        produce + consume at once, 1 s warm-up, 5 s measured
#   fsync-prod   produce only to a topic with flush.messages=1 and acks=all, 5 s
# then deletes the data dir. Prints one line per run: label workload produce_MB/s
# consume_MB/s e2e_p99_ms; sort the output by workload to compare.
#
# Usage: bench/ab.sh A_BIN B_BIN [rounds]
#   env: PORT (default 19193); BENCH_ARGS: extra `strom bench` flags for every run (e.g.
#   "--compression lz4"); WORKLOADS: which of the three to run (default all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 rounds=${3:-3} port=${PORT:-19193}
workloads=${WORKLOADS:-short-prod pc-5s fsync-prod}
read -r -a extra <<< "${BENCH_ARGS:-}"
want() { [[ " $workloads " == *" $1 "* ]]; }
run() { # BIN LABEL
    local bin=$1 label=$2 dir sp
    dir=$(mktemp -d target/ab-XXXXXX)
    "$bin" serve --data-dir "$dir" --kafka-addr "127.0.0.1:$port" --http-addr off --log-level warn &
    sp=$!
    sleep 1
    local bench=("$bin" bench --bootstrap "127.0.0.1:$port" --json "${extra[@]}")
    summary() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["produce_mb_per_s"]), round(d["consume_mb_per_s"]), d["e2e_latency_ms"]["p99"])'; }
    if want short-prod; then
        echo "$label short-prod $("${bench[@]}" --topic s --consumers 0 --messages 3000000 --warmup-secs 0 2>/dev/null | summary)"
        sync; sleep 2
    fi
    if want pc-5s; then
        echo "$label pc-5s $("${bench[@]}" --topic pc --duration-secs 5 --warmup-secs 1 2>/dev/null | summary)"
        sync; sleep 2
    fi
    if want fsync-prod; then
        echo "$label fsync-prod $("${bench[@]}" --topic f --consumers 0 --duration-secs 5 --warmup-secs 1 --topic-config flush.messages=1 --acks=-1 2>/dev/null | summary)"
    fi
    kill "$sp"; wait "$sp" 2>/dev/null || true
    rm -rf "$dir"; sync; sleep 2
}
for ((i = 0; i < rounds; i++)); do
    if ((i % 2 == 0)); then run "$a" A; run "$b" B; else run "$b" B; run "$a" A; fi
done
