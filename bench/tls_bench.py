#!/usr/bin/env python3
"""What TLS and SASL cost on the Kafka door (issue 16): produce and consume throughput with
confluent-kafka (librdkafka + OpenSSL) over a PLAINTEXT, an SSL and a SASL_SSL
(SCRAM-SHA-512) listener of the same `strom serve`, alternating, in the same run; then the
connection setup rate: new clients that connect, handshake (TLS, and SASL SCRAM-SHA-512 or
SCRAM-SHA-256) and fetch metadata, several at once:

    .venv/bin/python bench/tls_bench.py --bin target/release/strom [--records 200000] [--runs 3] [--handshakes 300]

Starts its own broker (fresh data dir, certificates from scripts/test-certs), 1 KB values,
acks=all, one 1-partition topic per run and listener. Each run produces the records and then
reads them back with a fresh consumer (assigned, from offset 0); the broker's CPU time (user + system, from /proc) is
taken around each phase. Prints one JSON line per run and the medians. No peer broker with
TLS is runnable here; the peer is Strom's own PLAINTEXT listener (sendfile) in the same run.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import threading

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[1]
VALUE = b"x" * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(conf, records, pid):
    topic = f"tls-bench-{uuid.uuid4().hex[:8]}"
    p = Producer({**conf, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1 << 20})
    p.produce(topic, b"warm-up")
    p.flush(30)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    for _ in range(records):
        while True:
            try:
                p.produce(topic, VALUE)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    t1, c1 = time.monotonic(), cpu_seconds(pid)
    # Assigned, not subscribed: no group join in the timed part.
    c = Consumer({**conf, "group.id": topic, "enable.auto.commit": False,
                  "fetch.max.bytes": 50 << 20})
    c2, t2 = cpu_seconds(pid), time.monotonic()
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    while got < records + 1:
        for m in c.consume(10000, 1.0):
            if m.error() is None:
                got += 1
    t3, c3 = time.monotonic(), cpu_seconds(pid)
    c.close()
    mb = records * len(VALUE) / 1e6
    return {"produce_mb_s": mb / (t1 - t0), "produce_cpu_us_per_rec": (c1 - c0) / records * 1e6,
            "consume_mb_s": mb / (t3 - t2), "consume_cpu_us_per_rec": (c3 - c2) / records * 1e6}


def handshakes(conf, n, pid, threads=4):
    """`n` new clients, `threads` at a time, each connecting, authenticating and reading
    metadata; returns clients per second and the broker's CPU per client."""
    left = [n]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            a = AdminClient({**conf, "socket.connection.setup.timeout.ms": 10000, "log_level": 3})
            md = a.list_topics(timeout=10)
            assert md.brokers, "no metadata"
            del a

    c0, t0 = cpu_seconds(pid), time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1, c1 = time.monotonic(), cpu_seconds(pid)
    return {"clients_per_s": n / (t1 - t0), "broker_cpu_ms_per_client": (c1 - c0) / n * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "strom"))
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--handshakes", type=int, default=300)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strom-tls-bench-"))
    certs = work / "certs"
    subprocess.run([str(REPO / "scripts" / "test-certs"), str(certs)], check=True)
    plain, tls, sasl = free_port(), free_port(), free_port()
    password = "bench-pa55word"
    for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        subprocess.run([a.bin, "user", "set", "bench", "--mechanism", mech, "--password-stdin",
                        "--data-dir", str(work / "data")], input=(password + "\n").encode(), check=True)
    proc = subprocess.Popen([a.bin, "serve", "--data-dir", str(work / "data"), "--http-addr", "off",
                             "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{tls},"
                             f"SASL_SSL://127.0.0.1:{sasl}",
                             "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
                             "--log-level", "warn"])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", sasl), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        modes = {
            "plaintext": {"bootstrap.servers": f"127.0.0.1:{plain}"},
            "ssl": {"bootstrap.servers": f"127.0.0.1:{tls}", "security.protocol": "SSL",
                    "ssl.ca.location": str(certs / "ca.pem")},
            "sasl_ssl": {"bootstrap.servers": f"127.0.0.1:{sasl}", "security.protocol": "SASL_SSL",
                         "ssl.ca.location": str(certs / "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.username": "bench", "sasl.password": password},
        }
        setups = {
            "plaintext": modes["plaintext"],
            "ssl": modes["ssl"],
            "sasl_ssl_scram_sha_512": modes["sasl_ssl"],
            "sasl_ssl_scram_sha_256": {**modes["sasl_ssl"], "sasl.mechanism": "SCRAM-SHA-256"},
        }
        results = {m: [] for m in modes}
        for i in range(a.runs):
            for m, conf in modes.items():
                r = run(conf, a.records, proc.pid)
                results[m].append(r)
                print(json.dumps({"run": i, "mode": m, **{k: round(v, 2) for k, v in r.items()}}), flush=True)
        for m, rs in results.items():
            med = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
            print(json.dumps({"median": m, "runs": len(rs), **med}))
        setup_results = {m: [] for m in setups}
        for i in range(a.runs):
            for m, conf in setups.items():
                r = handshakes(conf, a.handshakes, proc.pid)
                setup_results[m].append(r)
                print(json.dumps({"run": i, "setup": m, **{k: round(v, 3) for k, v in r.items()}}), flush=True)
        for m, rs in setup_results.items():
            med = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
            print(json.dumps({"median_setup": m, "runs": len(rs), **med}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
