"""A consumer-group member run as its own process by test_groups.py.

    python group_consumer.py '<json config>'

Config keys: bootstrap, group, topic, client ("confluent" or "kafka-python"), extra (client
config), commit ("auto" or "sync": commit synchronously after every message), max_messages.
Prints JSON lines on stdout: {"assignment": [partitions]} whenever the assignment changes,
{"revoked": [partitions]} on revocation, {"m": [partition, offset, value]} per message.
SIGTERM closes the consumer cleanly (LeaveGroup) and exits 0.
"""

import json
import signal
import sys
import time

cfg = json.loads(sys.argv[1])
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_confluent():
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"],
            "auto.offset.reset": "earliest", "enable.auto.commit": cfg.get("commit", "auto") == "auto",
            "auto.commit.interval.ms": 200}
    conf.update(cfg.get("extra", {}))
    c = Consumer(conf)
    c.subscribe([cfg["topic"]],
                on_revoke=lambda _c, ps: emit({"revoked": sorted(p.partition for p in ps)}))
    last = None
    n = 0
    try:
        while not stop:
            m = c.poll(0.1)
            now = sorted(p.partition for p in c.assignment())
            if now != last:
                emit({"assignment": now})
                last = now
            if m is None or m.error():
                continue
            emit({"m": [m.partition(), m.offset(), m.value().decode()]})
            n += 1
            if cfg.get("commit") == "sync":
                c.commit(message=m, asynchronous=False)
            if cfg.get("max_messages") and n >= cfg["max_messages"]:
                break
    finally:
        c.close()


def run_kafka_python():
    from kafka import KafkaConsumer

    conf = dict(bootstrap_servers=cfg["bootstrap"], group_id=cfg["group"], auto_offset_reset="earliest",
                enable_auto_commit=cfg.get("commit", "auto") == "auto", auto_commit_interval_ms=200)
    conf.update(cfg.get("extra", {}))
    c = KafkaConsumer(**conf)
    # Known the topic's partitions before the first JoinGroup: otherwise kafka-python 3.0
    # joins with an empty metadata snapshot and rejoins at once, and under load its main
    # thread's poll timeout can fall in that second join and lose the SyncGroup's result
    # (the consumer then never fetches nor heartbeats; seen in CI, not a broker fault).
    c.partitions_for_topic(cfg["topic"])
    c.subscribe([cfg["topic"]])
    last = None
    n = 0
    try:
        while not stop:
            batches = c.poll(timeout_ms=100)
            now = sorted(tp.partition for tp in c.assignment())
            if now != last:
                emit({"assignment": now})
                last = now
            for records in batches.values():
                for r in records:
                    emit({"m": [r.partition, r.offset, r.value.decode()]})
                    n += 1
            if cfg.get("commit") == "sync" and batches:
                c.commit()
            if cfg.get("max_messages") and n >= cfg["max_messages"]:
                break
    finally:
        c.close()


if cfg["client"] == "confluent":
    run_confluent()
else:
    run_kafka_python()
