#!/usr/bin/env bash
# Usage: copy two release builds to /tmp/strom-before and /tmp/strom-after, then
#   C=16 SIZE=100 bench/share-ab.sh
# A/B: share-group drain with 16 consumers, 1 partition; prints acked/s and broker peak RSS.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
for r in $(seq "${RUNS:-3}"); do for b in before after; do
  D=$(mktemp -d); P=$(free_port)
  /tmp/strom-$b serve --data-dir $D --kafka-addr 127.0.0.1:$P --http-addr off > $D.log 2>&1 & S=$!
  wait_port $P
  "$ROOT/target/release/strom" bench --json --bootstrap 127.0.0.1:$P --share-group g --topic q --partitions 1 --consumers ${C:-16} --messages 2000000 --message-size ${SIZE:-100} --duration-secs 8 --redeliveries 0 > $D.out 2>/dev/null &
  B=$!; peak=0
  while kill -0 $B 2>/dev/null; do r2=$(awk '/^VmRSS/ {print $2}' /proc/$S/status); [ "$r2" -gt "$peak" ] && peak=$r2; sleep 0.1; done
  rate=$(python3 -c 'import json,sys; print(round(json.loads(open(sys.argv[1]).read().splitlines()[-1])["acked_per_s"]))' $D.out)
  echo "$b run$r acked/s=$rate peakRSS=$((peak/1024))MB"
  kill $S; wait $S 2>/dev/null; rm -rf $D $D.log $D.out
done; done
