"""A consumer-group member run as its own process by the chaos suite.

    python group_member.py '<json config>'

Config keys: bootstrap, group, topic, out (a file path), commit_interval_ms (default 100),
extra (librdkafka config on top).

Consumes the topic as a member of `group` and commits, every `commit_interval_ms`, the position
after the last record it consumed of each partition (asynchronous commits, so that a commit to a
dead broker does not stall the loop). Writes lines to `out` (flushed after each):

    C <monotonic s> <partition> <offset>     the broker acknowledged this commit
    CE <monotonic s> <error name>            a commit failed
    G <monotonic s> <partitions>             the assignment changed (comma separated)
    N <monotonic s> <records consumed>       every second

SIGTERM closes the consumer (LeaveGroup) and exits 0.
"""

import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

cfg = json.loads(sys.argv[1])
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
out = open(cfg["out"], "a", buffering=1)
committed_positions = {}  # partition -> the last offset the broker acknowledged committing


def on_commit(err, partitions):
    now = time.monotonic()
    if err is not None:
        out.write(f"CE {now:.6f} {err.name()}\n")
        return
    for tp in partitions:
        if tp.error is not None:
            out.write(f"CE {now:.6f} {tp.error.name()}\n")
        elif tp.offset >= 0:
            out.write(f"C {now:.6f} {tp.partition} {tp.offset}\n")
            committed_positions[tp.partition] = tp.offset


conf = {
    "bootstrap.servers": cfg["bootstrap"],
    "group.id": cfg["group"],
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "on_commit": on_commit,
    "fetch.wait.max.ms": 100,
    "reconnect.backoff.ms": 10,
    "reconnect.backoff.max.ms": 100,
    "socket.connection.setup.timeout.ms": 2000,
}
conf.update(cfg.get("extra", {}))
c = Consumer(conf)
topic = cfg["topic"]
c.subscribe([topic])
interval_s = float(cfg.get("commit_interval_ms", 100)) / 1000
positions = {}  # partition -> offset after the last record consumed
assignment = None
consumed = 0
last_commit = last_count = time.monotonic()
try:
    while not stop:
        msgs = c.consume(num_messages=1000, timeout=0.05)
        for m in msgs:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    out.write(f"CE {time.monotonic():.6f} consume:{m.error().name()}\n")
                continue
            positions[m.partition()] = m.offset() + 1
            consumed += 1
        now_assigned = sorted(tp.partition for tp in c.assignment())
        if now_assigned != assignment:
            assignment = now_assigned
            out.write(f"G {time.monotonic():.6f} {','.join(map(str, assignment))}\n")
            positions = {p: o for p, o in positions.items() if p in assignment}
        now = time.monotonic()
        if now - last_commit >= interval_s:
            last_commit = now
            due = [TopicPartition(topic, p, o) for p, o in sorted(positions.items())
                   if committed_positions.get(p) != o]
            if due:
                try:
                    c.commit(offsets=due, asynchronous=True)
                except Exception as e:  # noqa: BLE001 - reported, the loop goes on
                    out.write(f"CE {now:.6f} commit-call:{type(e).__name__}\n")
        if now - last_count >= 1:
            last_count = now
            out.write(f"N {now:.6f} {consumed}\n")
finally:
    c.close()
    out.close()
