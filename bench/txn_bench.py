#!/usr/bin/env python3
"""Transactional vs idempotent produce throughput against a running `strom serve` (issue 20),
with confluent-kafka (librdkafka), in the same run:

    .venv/bin/python bench/txn_bench.py --bootstrap 127.0.0.1:9092 [--records 50000] [--runs 3]

Modes, each on its own fresh 1-partition topic, 1 KB values, acks=all:
- idempotent: enable.idempotence=true, one flush at the end;
- txn-100 / txn-1000: a transactional producer committing every 100 / 1000 records.
Each mode first sends one uncounted record, so connecting and fetching metadata are not timed.
Prints one JSON line per run and the medians (records/s, MB/s) with the cost of each
transactional mode against idempotent produce. Redpanda or Kafka are not runnable here: the
peer is Strom's own idempotent produce.
"""

import argparse
import json
import statistics
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

VALUE = b"x" * 1024


def create(bootstrap, name):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)


def produce(p, topic, n):
    for _ in range(n):
        while True:
            try:
                p.produce(topic, VALUE)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)


def run(bootstrap, mode, records):
    topic = f"txb-{mode}-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic)
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20,
            "queue.buffering.max.kbytes": 1 << 20, "acks": "all"}
    if mode == "idempotent":
        p = Producer({**conf, "enable.idempotence": True})
        # Warm up as init_transactions() does for the other modes: connect, fetch metadata and
        # get the producer id before the clock starts (one record, not counted).
        p.produce(topic, VALUE)
        assert p.flush(30) == 0
        start = time.monotonic()
        produce(p, topic, records)
        assert p.flush(120) == 0
    else:
        per_txn = int(mode.split("-")[1])
        p = Producer({**conf, "transactional.id": f"txb-{uuid.uuid4().hex[:8]}"})
        p.init_transactions(30)
        # Warm up as the idempotent mode does: the topic's metadata and a connection to its
        # leader before the clock starts (one committed record, not counted).
        p.begin_transaction()
        p.produce(topic, VALUE)
        p.commit_transaction(60)
        start = time.monotonic()
        done = 0
        while done < records:
            n = min(per_txn, records - done)
            p.begin_transaction()
            produce(p, topic, n)
            p.commit_transaction(60)
            done += n
    secs = time.monotonic() - start
    return {"mode": mode, "records": records, "seconds": round(secs, 3),
            "records_per_s": round(records / secs), "mb_per_s": round(records * 1024 / secs / 1e6, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    modes = ["idempotent", "txn-100", "txn-1000"]
    results = {m: [] for m in modes}
    for _ in range(a.runs):
        for m in modes:  # interleaved, so drift hits every mode alike
            r = run(a.bootstrap, m, a.records)
            print(json.dumps(r), flush=True)
            results[m].append(r["records_per_s"])
    base = statistics.median(results["idempotent"])
    for m in modes:
        med = statistics.median(results[m])
        print(json.dumps({"mode": m, "median_records_per_s": med,
                          "median_mb_per_s": round(med * 1024 / 1e6, 2),
                          "vs_idempotent": f"{(med / base - 1) * 100:+.1f}%"}))


if __name__ == "__main__":
    main()
