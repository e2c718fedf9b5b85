#!/usr/bin/env bash
# What TLS and SASL cost on the Kafka door with a Rust client on both ends (issue 16): `strom
# bench` (rustls, the same TLS stack as the broker) producing and then reading back 1 KB
# records over a PLAINTEXT, an SSL and a SASL_SSL (SCRAM-SHA-512) listener of one `strom
# serve`, modes alternating, RUNS rounds; prints one line per run and the medians.
#
#     bench/tls_native.sh [RUNS] [RECORDS]       (default 3 rounds of 2000000 records)
#
# Starts its own broker (fresh data dir, certificates from scripts/test-certs) from
# target/release/strom (STROM_BIN overrides). Produce: 2 producers, 1000-record batches, 8
# requests in flight each, acks=1, until RECORDS are acknowledged. Consume: one consumer
# reads the topic back from its start (a backlog run), then the topic is deleted. The
# broker's CPU time (user + system, from /proc) is taken around each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
records="${2:-2000000}"
bin="${STROM_BIN:-$PWD/target/release/strom}"
work="$(mktemp -d /tmp/strom-tls-native.XXXXXX)"
broker=""
cleanup() {
    if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1="$(free_port)"; p2="$(free_port)"; p3="$(free_port)"
scripts/test-certs "$work/certs" >/dev/null
export STROM_SASL_PASSWORD="bench-$RANDOM$RANDOM"
echo "$STROM_SASL_PASSWORD" | "$bin" user set bench --mechanism SCRAM-SHA-512 --password-stdin \
    --data-dir "$work/data" >/dev/null
"$bin" serve --data-dir "$work/data" --http-addr off --grpc-addr off \
    --listeners "PLAINTEXT://127.0.0.1:$p1,SSL://127.0.0.1:$p2,SASL_SSL://127.0.0.1:$p3" \
    --tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key" >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
    "$bin" topic list --bootstrap "127.0.0.1:$p1" >/dev/null 2>&1 && break
    sleep 0.1
done

cpu() { awk '{print $14 + $15}' "/proc/$broker/stat"; }
hz="$(getconf CLK_TCK)"

declare -A args=(
    [PLAINTEXT]="--bootstrap 127.0.0.1:$p1"
    [SSL]="--bootstrap 127.0.0.1:$p2 --security-protocol SSL --tls-ca $work/certs/ca.pem"
    [SASL_SSL]="--bootstrap 127.0.0.1:$p3 --security-protocol SASL_SSL --tls-ca $work/certs/ca.pem --sasl-mechanism SCRAM-SHA-512 --sasl-username bench"
)
out="$work/results"
for run in $(seq "$runs"); do
    for mode in PLAINTEXT SSL SASL_SSL; do
        topic="tls-$mode-$run"
        c0="$(cpu)"
        # shellcheck disable=SC2086
        prod="$("$bin" bench ${args[$mode]} --json --topic "$topic" --producers 2 --consumers 0 \
            --batch 1000 --inflight 8 --message-size 1024 --warmup-secs 0 --messages "$records" 2>"$work/bench.err" | tail -1)" || { cat "$work/bench.err" >&2; exit 1; }
        c1="$(cpu)"
        # shellcheck disable=SC2086
        cons="$("$bin" bench ${args[$mode]} --json --topic "$topic" --producers 0 --consumers 1 2>"$work/bench.err" | tail -1)" || { cat "$work/bench.err" >&2; exit 1; }
        c2="$(cpu)"
        "$bin" topic delete "$topic" --bootstrap "127.0.0.1:$p1" >/dev/null
        python3 - "$mode" "$run" "$prod" "$cons" "$c0" "$c1" "$c2" "$hz" <<'EOF' | tee -a "$out"
import json, sys
mode, run, prod, cons = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
c0, c1, c2, hz = (float(x) for x in sys.argv[5:9])
print(json.dumps({"mode": mode, "run": int(run),
                  "produce_mb_s": round(prod["produce_mb_per_s"], 1),
                  "produce_cpu_us_per_record": round((c1 - c0) / hz * 1e6 / max(prod["messages"], 1), 2),
                  "consume_mb_s": round(cons["consume_mb_per_s"], 1),
                  "consume_cpu_us_per_record": round((c2 - c1) / hz * 1e6 / max(cons["consumed"], 1), 2)}))
EOF
    done
done
python3 - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = {}
for mode in ("PLAINTEXT", "SSL", "SASL_SSL"):
    rs = [r for r in rows if r["mode"] == mode]
    med = {k: statistics.median(r[k] for r in rs) for k in
           ("produce_mb_s", "produce_cpu_us_per_record", "consume_mb_s", "consume_cpu_us_per_record")}
    base.setdefault("p", med["produce_mb_s"]); base.setdefault("c", med["consume_mb_s"])
    print(f"median {mode:9} produce {med['produce_mb_s']:7.1f} MB/s ({med['produce_mb_s'] / base['p']:.0%}) "
          f"{med['produce_cpu_us_per_record']:.2f} us/rec broker CPU | consume {med['consume_mb_s']:7.1f} MB/s "
          f"({med['consume_mb_s'] / base['c']:.0%}) {med['consume_cpu_us_per_record']:.2f} us/rec")
EOF
