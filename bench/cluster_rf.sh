#!/usr/bin/env bash
# Cluster mode (issue 19): acks=all produce throughput and ack latency with replication factor
# 3 against 1 on the same three brokers, in the same run. Starts its own etcd (Debian's
# etcd-server) and three `strom serve` on 127.0.0.1, .2 and .3 (fresh data dirs, release build
# unless STROM_BIN), then alternates RF=1 and RF=3 rounds, RUNS of each:
#
#     bench/cluster_rf.sh [RUNS] [SECONDS] [RATE] [BATCH]
#
# (default 3 rounds of 10 s, as fast as possible, 1000-record batches; RATE records/s over all
# producers for the latency at a fixed load, e.g. `bench/cluster_rf.sh 3 10 30000 100`).
#
# Each round: `strom bench` with a new 3-partition topic (one partition led by each broker),
# 3 producers, 1 KB records, BATCH-record batches, 8 requests in flight each, acks=all, the
# producers' ack latency (send -> acknowledgement) and one consumer reading along. Prints the
# bench's summary per round and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
secs="${2:-10}"
rate="${3:-0}"
batch="${4:-1000}"
bin="${STROM_BIN:-$PWD/target/release/strom}"
work="$(mktemp -d /tmp/strom-cluster-rf.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ec="$(free_port)"; ep="$(free_port)"
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "default=http://127.0.0.1:$ep" >"$work/etcd.log" 2>&1 &
pids+=($!)
ports=()
for i in 1 2 3; do
    port="$(free_port)"; ports+=("$port")
    "$bin" serve --node-id "$i" --cluster-etcd "http://127.0.0.1:$ec" --kafka-addr "127.0.0.$i:$port" \
        --http-addr off --grpc-addr off --data-dir "$work/d$i" >"$work/b$i.log" 2>&1 &
    pids+=($!)
done
boot="127.0.0.1:${ports[0]}"
for _ in $(seq 200); do
    n="$("$bin" cluster status --json --bootstrap "$boot" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["brokers"]))' 2>/dev/null || echo 0)"
    [ "$n" = 3 ] && break
    sleep 0.1
done
echo "machine: $(nproc) cores, $(uname -r); binary $bin ($(git rev-parse --short HEAD))"
declare -A tput lat
for r in $(seq "$runs"); do
    for rf in 1 3; do
        out="$("$bin" bench --bootstrap "$boot" --topic "rf$rf-$r" --partitions 3 --replication-factor "$rf" \
            --producers 3 --consumers 1 --message-size 1024 --batch "$batch" --rate "$rate" --linger-ms 5 --inflight 8 --acks all \
            --warmup-secs 2 --duration-secs "$secs" --json 2>/dev/null)"
        mbs="$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["produce_mb_per_s"],1))')"
        p50="$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ack_latency_ms"]["p50"])')"
        p99="$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ack_latency_ms"]["p99"])')"
        echo "round $r RF=$rf: produce $mbs MB/s, ack latency p50 $p50 ms, p99 $p99 ms"
        tput[$rf]+="$mbs "; lat[$rf]+="$p99 "
    done
done
med() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' $1; }
for rf in 1 3; do
    echo "median RF=$rf: produce $(med "${tput[$rf]}") MB/s, ack p99 $(med "${lat[$rf]}") ms"
done
