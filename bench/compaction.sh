#!/usr/bin/env bash
# The log cleaner inside `strom serve`: produce throughput to one topic while the cleaner
# compacts another, against the same produce with the cleaner idle, in the same run, RUNS
# rounds (idle first, then cleaning; each round waits for its pass to end, so an idle
# measurement never overlaps a pass); and the broker's cleaner MB/s (the compacted topic's
# bytes before the pass / the pass's duration from /metrics).
#
# Each round: `strom bench` preloads PRELOAD keyed 1 KiB records (10,000 keys) into a topic
# `dirty-N` with cleanup.policy=delete and 8 MiB segments; then produces to `idle-N` for DUR
# seconds (1 KiB records, batches of 1000, acks=1); then alters `dirty-N` to
# cleanup.policy=compact and produces to `busy-N` for DUR seconds while the cleaner works.
#
# Usage: bench/compaction.sh   (env: STROM, default target/release/strom; RUNS 3; PRELOAD 500000; DUR 8)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
strom=${STROM:-target/release/strom} runs=${RUNS:-3} preload=${PRELOAD:-500000} dur=${DUR:-8}
port=$(free_port) http=$(free_port) dir=$(mktemp -d target/compaction-XXXXXX)
"$strom" serve --data-dir "$dir" --kafka-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$http" \
    --log-cleaner-backoff-ms 100 --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
wait_port "$port"
bench=("$strom" bench --bootstrap "127.0.0.1:$port" --json)
mbs() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["produce_mb_per_s"]))'; }
metric() { curl -s "127.0.0.1:$http/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
for r in $(seq "$runs"); do
    "${bench[@]}" --topic "dirty-$r" --consumers 0 --messages "$preload" --keys 10000 --warmup-secs 0 \
        --topic-config segment.bytes=8388608 >/dev/null 2>&1
    sync
    idle=$("${bench[@]}" --topic "idle-$r" --consumers 0 --duration-secs "$dur" --warmup-secs 1 2>/dev/null | mbs)
    bytes=$(du -sb "$dir/dirty-$r-0" | cut -f1)
    passes=$(metric strom_log_cleaner_passes_total)
    "$strom" topic alter "dirty-$r" -c cleanup.policy=compact -c min.cleanable.dirty.ratio=0.01 \
        --bootstrap "127.0.0.1:$port" >/dev/null
    busy=$("${bench[@]}" --topic "busy-$r" --consumers 0 --duration-secs "$dur" --warmup-secs 1 2>/dev/null | mbs)
    still=$([ "$(metric strom_log_cleaner_passes_total)" = "$passes" ] && echo yes || echo no)
    while [ "$(metric strom_log_cleaner_passes_total)" = "$passes" ]; do sleep 0.2; done
    secs=$(metric strom_log_cleaner_last_pass_seconds)
    clean=$(python3 -c "print(round($bytes / 1e6 / $secs))")
    echo "round $r: produce ${idle} MB/s cleaner idle, ${busy} MB/s cleaner running (pass still running at the end: $still); pass ${secs}s over $((bytes >> 20)) MiB = ${clean} MB/s compacted"
    for t in "dirty-$r" "idle-$r" "busy-$r"; do "$strom" topic delete "$t" --bootstrap "127.0.0.1:$port" >/dev/null; done
    sleep 1
done
