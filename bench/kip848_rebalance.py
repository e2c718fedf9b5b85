#!/usr/bin/env python3
"""KIP-848 against the classic protocol: how long a member joining a stable group of N
members waits for its first record, against a running `strom serve`, with confluent-kafka.

    .venv/bin/python bench/kip848_rebalance.py --bootstrap 127.0.0.1:9092 [--members 50] [--runs 3]
        [--classic-heartbeat-ms 3000]

Per run and protocol (`group.protocol=classic`, librdkafka's default eager range assignor,
then `group.protocol=consumer`, the broker's `uniform` assignor): N consumers (one librdkafka
instance each, polled on their own threads, one process) join a fresh group on a 100-partition
topic holding records in every partition (no commits: any partition a member gets has records
from offset 0); once their assignments are disjoint and cover the topic, one more consumer
joins and the time from its `subscribe` to its first record is taken. Prints one JSON line per
run and the medians per protocol.
"""

import argparse
import json
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 100


def create_topic(bootstrap, name):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(timeout=30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(PARTITIONS * 20):
        p.produce(name, value=b"x" * 100, partition=i % PARTITIONS)
    assert p.flush(60) == 0


class Member:
    def __init__(self, bootstrap, group, topic, protocol, hb_ms):
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
                "auto.offset.reset": "earliest", "enable.auto.commit": False,
                "fetch.wait.max.ms": 100}
        if protocol == "classic":
            conf.update({"heartbeat.interval.ms": hb_ms, "session.timeout.ms": max(10_000, 3 * hb_ms)})
        self.c = Consumer(conf)
        self.first = None
        self.owned = []
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.c.subscribe([topic])
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            m = self.c.poll(0.05)
            self.owned = [p.partition for p in self.c.assignment()]
            if m is not None and not m.error() and self.first is None:
                self.first = time.monotonic()

    def close(self):
        self.stop.set()
        self.t.join(10)
        self.c.close()


def stable(members):
    flat = [p for m in members for p in m.owned]
    return all(m.owned for m in members) and len(flat) == len(set(flat)) == PARTITIONS


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def one_run(bootstrap, topic, protocol, n, hb_ms):
    group = f"bench-{protocol}-{uuid.uuid4().hex[:8]}"
    members = [Member(bootstrap, group, topic, protocol, hb_ms) for _ in range(n)]
    try:
        wait(lambda: stable(members), 180, f"{n} {protocol} members stable")
        time.sleep(1.0)
        joiner = Member(bootstrap, group, topic, protocol, hb_ms)
        members.append(joiner)
        wait(lambda: joiner.first is not None, 120, "the joiner's first record")
        first_record_s = joiner.first - joiner.started
        wait(lambda: stable(members), 120, f"{n + 1} {protocol} members stable")
        all_stable_s = time.monotonic() - joiner.started
        return {"protocol": protocol, "members": n, "first_record_s": round(first_record_s, 3),
                "all_stable_s": round(all_stable_s, 3)}
    finally:
        closers = [threading.Thread(target=m.close) for m in members]
        for t in closers:
            t.start()
        for t in closers:
            t.join(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--classic-heartbeat-ms", type=int, default=3000)
    a = ap.parse_args()
    topic = f"bench-kip848-{uuid.uuid4().hex[:8]}"
    create_topic(a.bootstrap, topic)
    results = {"classic": [], "consumer": []}
    for _ in range(a.runs):
        for protocol in ("classic", "consumer"):
            r = one_run(a.bootstrap, topic, protocol, a.members, a.classic_heartbeat_ms)
            print(json.dumps(r), flush=True)
            results[protocol].append(r)
    for protocol, rs in results.items():
        print(json.dumps({"protocol": protocol, "runs": len(rs),
                          "median_first_record_s": statistics.median(r["first_record_s"] for r in rs),
                          "median_all_stable_s": statistics.median(r["all_stable_s"] for r in rs)}),
              flush=True)


if __name__ == "__main__":
    main()
