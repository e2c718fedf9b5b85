#!/usr/bin/env python3
"""read_committed vs read_uncommitted fetch throughput, same broker, same log, same run.

The log: `txn_fixture --bench N` (crates/strom-broker/examples/txn_fixture.rs) writes N
transactions of 100 records of 1 KiB (one batch each) through the core's API, every tenth
aborted, each ended by its marker. A release `strom serve` serves it; a confluent-kafka
consumer (librdkafka) reads the partition from offset 0 to its end, alternately at each
isolation level, RUNS times each; medians are reported. read_committed delivers 90 % of the
records (the aborted ones are dropped by the client from the broker's aborted-transaction
list), both read the same bytes from the broker.

    .venv/bin/python bench/read-committed.py [--transactions 2000] [--runs 3]
"""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time

from confluent_kafka import Consumer, TopicPartition, KafkaError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_all(bootstrap, isolation, end):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{time.monotonic_ns()}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
        "fetch.max.bytes": 52428800,
        "max.partition.fetch.bytes": 10485760,
    })
    c.assign([TopicPartition("rc-bench", 0, 0)])
    n = 0
    started = time.monotonic()
    while True:
        msgs = c.consume(10000, 1.0)
        done = False
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= end:
                    done = True
                continue
            n += 1
        if done:
            break
    elapsed = time.monotonic() - started
    c.close()
    return n, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--strom", default=os.path.join(ROOT, "target", "release", "strom"))
    ap.add_argument("--fixture", default=os.path.join(ROOT, "target", "debug", "examples", "txn_fixture"))
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="strom-bench-rc-")
    subprocess.run([a.fixture, data, "--bench", str(a.transactions)], check=True)
    port = free_port()
    proc = subprocess.Popen([a.strom, "serve", "--data-dir", data, "--kafka-addr", f"127.0.0.1:{port}",
                             "--http-addr", "off"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        end = a.transactions * 101
        results = {"read_uncommitted": [], "read_committed": []}
        read_all(f"127.0.0.1:{port}", "read_uncommitted", end)  # warm the page cache
        for _ in range(a.runs):
            for iso in results:
                n, t = read_all(f"127.0.0.1:{port}", iso, end)
                results[iso].append((n, t))
                print(f"{iso}: {n} records in {t:.3f} s = {n / t:,.0f} records/s, "
                      f"{a.transactions * 100 * 1024 / t / 1e6:,.1f} MB/s of the log", flush=True)
        for iso, rs in results.items():
            t = statistics.median(x[1] for x in rs)
            n = rs[0][0]
            print(f"median {iso}: {t:.3f} s to read the log ({a.transactions * 100} records stored, "
                  f"{n} delivered): {n / t:,.0f} records/s delivered, "
                  f"{a.transactions * 100 * 1024 / t / 1e6:,.1f} MB/s of the log")
    finally:
        proc.terminate()
        proc.wait(20)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
