#!/usr/bin/env python3
"""Consumer group timings against a running `strom serve` (issue 4), with confluent-kafka.

    .venv/bin/python bench/groups.py --bootstrap 127.0.0.1:9092 [--runs 3]

1. failover: 3 consumer processes on a 12-partition topic (session.timeout.ms=6000,
   heartbeat.interval.ms=1000); kill -9 one; time until the two survivors own all 12.
2. join: 50 consumers (one process, one librdkafka instance each) on a 100-partition topic;
   when stable, one more joins; time until all 51 hold disjoint assignments covering 100.
Prints one JSON line per run and the medians.
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

HELPER = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "group_consumer.py"


def create(bootstrap, name, partitions):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


class Proc:
    def __init__(self, bootstrap, group, topic, extra):
        conf = {"bootstrap": bootstrap, "group": group, "topic": topic, "client": "confluent", "extra": extra}
        self.p = subprocess.Popen([sys.executable, str(HELPER), json.dumps(conf)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        self.owned = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            d = json.loads(line)
            if "assignment" in d:
                self.owned = d["assignment"]


def covers(owned_lists, n):
    flat = [p for o in owned_lists for p in o]
    return all(owned_lists) and len(flat) == len(set(flat)) == n


def wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError


def failover(bootstrap):
    topic, group = f"fo-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 12)
    extra = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    procs = [Proc(bootstrap, group, topic, extra) for _ in range(3)]
    try:
        wait(lambda: covers([p.owned for p in procs], 12), 60)
        time.sleep(1)
        t0 = time.monotonic()
        procs[0].p.kill()
        t1 = wait(lambda: covers([p.owned for p in procs[1:]], 12), 60)
        return t1 - t0
    finally:
        for p in procs:
            p.p.kill()


def join_50(bootstrap):
    topic, group = f"j-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 100)
    members = []
    stop = threading.Event()

    def member():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 30000,
                      "heartbeat.interval.ms": 1000, "enable.auto.commit": False})
        slot = {"owned": [], "c": c}
        members.append(slot)
        c.subscribe([topic])
        while not stop.is_set():
            c.poll(0.05)
            slot["owned"] = [p.partition for p in c.assignment()]
        c.close()

    threads = [threading.Thread(target=member, daemon=True) for _ in range(50)]
    for t in threads:
        t.start()
    try:
        wait(lambda: len(members) == 50 and covers([m["owned"] for m in members], 100), 120)
        time.sleep(1)
        t0 = time.monotonic()
        extra = threading.Thread(target=member, daemon=True)
        extra.start()
        t1 = wait(lambda: len(members) == 51 and covers([m["owned"] for m in members], 100), 120)
        return t1 - t0
    finally:
        stop.set()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    fo, jn = [], []
    for i in range(a.runs):
        fo.append(failover(a.bootstrap))
        print(json.dumps({"run": i, "failover_s": round(fo[-1], 3)}), flush=True)
    for i in range(a.runs):
        jn.append(join_50(a.bootstrap))
        print(json.dumps({"run": i, "join_50_plus_1_s": round(jn[-1], 3)}), flush=True)
    print(json.dumps({"failover_median_s": round(statistics.median(fo), 3),
                      "join_50_plus_1_median_s": round(statistics.median(jn), 3)}))


if __name__ == "__main__":
    main()
