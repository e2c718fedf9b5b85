#!/usr/bin/env python3
"""Where one transaction's time goes, from the client's side (issue 20): a confluent-kafka
transactional producer runs N transactions of K 1 KB records and prints the mean time of
begin_transaction(), the K produce() calls and commit_transaction(). With --debug, librdkafka's
`protocol,eos` log goes to stderr (request send/receive times and round trips):

    .venv/bin/python bench/txn_trace.py --bootstrap 127.0.0.1:9092 [--txns 300] [--records 1000]
        [--linger-ms 5] [--debug]
"""

import argparse
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--txns", type=int, default=300)
    ap.add_argument("--records", type=int, default=1000, help="records per transaction")
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args()
    topic = f"txt-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    conf = {"bootstrap.servers": a.bootstrap, "linger.ms": a.linger_ms, "acks": "all",
            "transactional.id": topic, "enable.metrics.push": False}
    if a.debug:
        conf["debug"] = "protocol,eos"
    p = Producer(conf)
    p.init_transactions(30)
    # Warm-up: the topic's metadata and a connection to its leader (not timed).
    p.begin_transaction()
    p.produce(topic, b"x")
    p.commit_transaction(30)
    value = b"x" * 1024
    begin = produce = commit = 0.0
    for _ in range(a.txns):
        t0 = time.perf_counter()
        p.begin_transaction()
        t1 = time.perf_counter()
        for _ in range(a.records):
            p.produce(topic, value)
        t2 = time.perf_counter()
        p.commit_transaction(30)
        t3 = time.perf_counter()
        begin, produce, commit = begin + t1 - t0, produce + t2 - t1, commit + t3 - t2
    n = a.txns
    print(f"per transaction of {a.records} records: begin {begin / n * 1e3:.3f} ms, "
          f"produce {produce / n * 1e3:.3f} ms, commit {commit / n * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
