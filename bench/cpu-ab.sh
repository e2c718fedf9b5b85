#!/usr/bin/env bash
# CPU seconds per GB produced, for two `strom` builds in alternating rounds: the broker's
# (utime + stime of `strom serve` from /proc) and the bench client's (/usr/bin/time), one
# 2 M-record produce-only run of 1 KB records per round and codec. On a shared machine this
# is steadier than throughput, which follows the CPU per byte of client and broker together.
#
# Usage: bench/cpu-ab.sh A_BIN B_BIN rounds codec...   (env: PORT, default 19399)
set -u
a=$1 b=$2 rounds=$3; shift 3
port=${PORT:-19399}
tck=$(getconf CLK_TCK)
run() { # bin label codec
  local dir; dir=$(mktemp -d)
  "$1" serve --data-dir "$dir/data" --kafka-addr 127.0.0.1:$port --http-addr off --log-level warn & local sp=$!
  sleep 1
  local out; out=$( { /usr/bin/time -f "%U %S" "$1" bench --bootstrap 127.0.0.1:$port --json --compression "$3" --topic s --consumers 0 --messages 2000000 --warmup-secs 0 2>"$dir/time" >"$dir/json"; } ; tail -1 "$dir/time")
  local mbs; mbs=$(python3 -c "import json; print(round(json.load(open('$dir/json'))['produce_mb_per_s']))")
  local st; st=$(awk '{print $14+$15}' /proc/$sp/stat)
  kill $sp; wait $sp 2>/dev/null
  local gb; gb=$(python3 -c "print(2000000*1024/1e9)")
  python3 -c "
import json
u,s='$out'.split(); b=$st/$tck; c=float(u)+float(s); gb=$gb
print('$2 $3 MB/s=$mbs broker_cpu_s_per_GB=%.3f client_cpu_s_per_GB=%.3f' % (b/gb, c/gb))"
  rm -rf "$dir"; sync; sleep 1
}
for codec in "$@"; do
  for ((i=0;i<rounds;i++)); do
    if ((i%2==0)); then run "$a" A "$codec"; run "$b" B "$codec"; else run "$b" B "$codec"; run "$a" A "$codec"; fi
  done
done
