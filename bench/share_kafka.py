"""Share-group (queue) throughput over the Kafka door: confluent-kafka ShareConsumers (threads,
explicit ACCEPT, commit_async after each poll) drain a 1-partition topic; the time runs until
the share-partition's start offset (DescribeShareGroupOffsets) has passed every record, so only
acknowledgements the broker made durable count.

    .venv/bin/python bench/share_kafka.py [--bin target/release/strom] [--records 50000] [--consumers 1,4,16]

Starts its own `strom serve` per run on a free loopback port over a temp dir; prints a
Markdown table.
"""

import argparse
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests/e2e"))
from kwire import NO_TAGS, Conn, compact_array_count, compact_string  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_offset(conn, group, topic):
    """DescribeShareGroupOffsets v0 of partition 0."""
    body = (compact_array_count(1) + compact_string(group) + compact_array_count(1)
            + compact_string(topic) + compact_array_count(1) + struct.pack(">i", 0) + NO_TAGS
            + NO_TAGS + NO_TAGS)
    r = conn.call_flexible(90, 0, body)
    r.i32()
    found = [-1]

    def partition(r):
        r.i32()
        found[0] = r.i64()
        r.i32(), r.i16(), r.cstring(), r.tags()

    def topic(r):
        r.cstring(), r.uuid(), r.carray(partition), r.tags()

    # Groups: id, topics, error code and message (the group is unknown until its first member).
    r.carray(lambda r: (r.cstring(), r.carray(topic), r.i16(), r.cstring(), r.tags()))
    return found[0]


def run(binary, records, consumers):
    port, data = free_port(), tempfile.mkdtemp(prefix="strom-bench-share-")
    proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--kafka-addr", f"127.0.0.1:{port}",
                             "--http-addr", "off"], stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("q", 1, 1)])["q"].result(20)
        res = ConfigResource(ResourceType.GROUP, "g", incremental_configs=[ConfigEntry(
            "share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(20)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        for i in range(records):
            p.produce("q", b"x" * 100)
            if i % 10000 == 0:
                p.poll(0)
        p.flush(60)
        stop = threading.Event()

        def work():
            c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": "g",
                               "share.acknowledgement.mode": "explicit"})
            c.subscribe(["q"])
            while not stop.is_set():
                got = [m for m in c.poll(0.2) if m.error() is None]
                for m in got:
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
                if got:
                    c.commit_async()
            c.close()

        threads = [threading.Thread(target=work) for _ in range(consumers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        with Conn(bootstrap) as conn:
            while start_offset(conn, "g", "q") < records and time.monotonic() - started < 300:
                time.sleep(0.005)
        elapsed = time.monotonic() - started
        stop.set()
        for t in threads:
            t.join(60)
        return elapsed
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/strom")
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--consumers", default="1,4,16")
    a = ap.parse_args()
    print("| consumers | records | seconds | records accepted/s |")
    print("|---|---|---|---|")
    for n in (int(x) for x in a.consumers.split(",")):
        s = run(a.bin, a.records, n)
        print(f"| {n} | {a.records} | {s:.2f} | {a.records / s:,.0f} |")


if __name__ == "__main__":
    main()
