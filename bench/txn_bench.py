#!/usr/bin/env python3
"""Transactional vs idempotent produce throughput against a running `strom serve` (issue 20),
with confluent-kafka (librdkafka), in the same run:

    .venv/bin/python bench/txn_bench.py --bootstrap 127.0.0.1:9092 [--records 50000] [--runs 3]
        [--producers N]

Modes, each on its own fresh topic (one partition per producer), 1 KB values, acks=all:
- idempotent: enable.idempotence=true, one flush at the end;
- txn-100 / txn-1000: a transactional producer committing every 100 / 1000 records.
Each mode first sends one uncounted record, so connecting and fetching metadata are not timed.
With `--producers N`, N processes (one producer each, as an exactly-once pipeline runs one
transactional producer per task) each write `--records` to their own partition of an
N-partition topic, started together; the rate is all their records over the time from the
first start to the last finish.
Prints one JSON line per run and the medians (records/s, MB/s) with the cost of each
transactional mode against idempotent produce. Redpanda or Kafka are not runnable here: the
peer is Strom's own idempotent produce.
"""

import argparse
import json
import multiprocessing
import statistics
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

VALUE = b"x" * 1024


def create(bootstrap, name, partitions=1):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def produce(p, topic, n, partition=-1):
    for _ in range(n):
        while True:
            try:
                p.produce(topic, VALUE, partition=partition)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)


def run(bootstrap, mode, records):
    topic = f"txb-{mode}-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic)
    start, secs = timed(bootstrap, mode, topic, records)
    return {"mode": mode, "records": records, "seconds": round(secs, 3),
            "records_per_s": round(records / secs), "mb_per_s": round(records * 1024 / secs / 1e6, 2)}


def timed(bootstrap, mode, topic, records, partition=-1, ready=None):
    """Produces `records` in `mode`; returns (start, seconds), timed after the warm-up (and,
    with `ready`, a barrier shared by the producers of one run)."""
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20,
            "queue.buffering.max.kbytes": 1 << 20, "acks": "all"}
    if mode == "idempotent":
        p = Producer({**conf, "enable.idempotence": True})
        # Warm up as init_transactions() does for the other modes: connect, fetch metadata and
        # get the producer id before the clock starts (one record, not counted).
        p.produce(topic, VALUE, partition=partition)
        assert p.flush(30) == 0
        if ready is not None:
            ready.wait()
        start = time.monotonic()
        produce(p, topic, records, partition)
        assert p.flush(120) == 0
    else:
        per_txn = int(mode.split("-")[1])
        p = Producer({**conf, "transactional.id": f"txb-{uuid.uuid4().hex[:8]}"})
        p.init_transactions(30)
        # Warm up as the idempotent mode does: the topic's metadata and a connection to its
        # leader before the clock starts (one committed record, not counted).
        p.begin_transaction()
        p.produce(topic, VALUE, partition=partition)
        p.commit_transaction(60)
        if ready is not None:
            ready.wait()
        start = time.monotonic()
        done = 0
        while done < records:
            n = min(per_txn, records - done)
            p.begin_transaction()
            produce(p, topic, n, partition)
            p.commit_transaction(60)
            done += n
    return start, time.monotonic() - start


def producer_proc(bootstrap, mode, topic, records, partition, ready, out):
    out.put(timed(bootstrap, mode, topic, records, partition, ready))


def run_many(bootstrap, mode, records, producers):
    """`producers` processes, each writing `records` to its own partition, started together."""
    topic = f"txb-{mode}-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, producers)
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Barrier(producers), ctx.Queue()
    procs = [ctx.Process(target=producer_proc, args=(bootstrap, mode, topic, records, i, ready, out))
             for i in range(producers)]
    for p in procs:
        p.start()
    timings = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        assert p.exitcode == 0, f"a {mode} producer failed"
    first = min(s for s, _ in timings)
    secs = max(s + d for s, d in timings) - first
    total = records * producers
    return {"mode": mode, "producers": producers, "records": total, "seconds": round(secs, 3),
            "records_per_s": round(total / secs), "mb_per_s": round(total * 1024 / secs / 1e6, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--producers", type=int, default=1,
                    help="producer processes per mode, each with its own partition (--records each)")
    a = ap.parse_args()
    modes = ["idempotent", "txn-100", "txn-1000"]
    results = {m: [] for m in modes}
    for _ in range(a.runs):
        for m in modes:  # interleaved, so drift hits every mode alike
            if a.producers == 1:
                r = run(a.bootstrap, m, a.records)
            else:
                r = run_many(a.bootstrap, m, a.records, a.producers)
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
