"""Many partitions within a bounded number of open files (issue 23, part 3), over a real
`strom serve` with confluent-kafka and kcat.

- 100 partitions (300 segment files: data, offset index, time index each) on a broker started
  with `--log-max-open-files 16`: every partition is written and read back record for record;
  `strom_log_open_files` stays within the budget (plus the few files a background seal may hold
  at that moment), files were closed and opened again (`strom_log_file_closes_total`), and the
  broker process's descriptors stay far below one per segment file;
- after a restart, kcat reads every record of every partition again, and appends continue at
  the right offsets;
- a budget below the minimum is refused at start with a clear message.
"""

import os
import subprocess
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.timeout(180)

TOPICS = 4
PARTITIONS = 25
RECORDS = 20
BUDGET = 16
# Files a background seal or an append may hold for a moment beyond the budget.
IN_USE = 8


def metric(broker, name):
    with urllib.request.urlopen(f"{broker.http}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def fds(broker):
    return len(os.listdir(f"/proc/{broker.proc.pid}/fd"))


def value(topic, p, i):
    return f"{topic}/{p}/{i}".encode() * 10


def read_back(broker, topic):
    """Every record of `topic`, by partition, read with confluent-kafka from the start."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = {p: [] for p in range(PARTITIONS)}
    want = PARTITIONS * RECORDS
    n = 0
    for _ in range(600):
        for m in c.consume(500, timeout=0.5):
            assert not m.error(), m.error()
            got[m.partition()].append((m.offset(), m.value()))
            n += 1
        if n >= want:
            break
    c.close()
    return got


def test_many_partitions_live_within_a_small_budget_of_open_files(broker_factory):
    b = broker_factory(http=True, log_max_open_files=BUDGET)
    before = fds(b)
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    topics = [f"many-{t}" for t in range(TOPICS)]
    for f in a.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics], operation_timeout=30).values():
        f.result(timeout=60)
    assert metric(b, "strom_log_open_files_max") == BUDGET
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
    errors = []
    # One record at a time over every partition in turn: each append finds its files closed.
    for i in range(RECORDS):
        for t in topics:
            for part in range(PARTITIONS):
                p.produce(t, value=value(t, part, i), partition=part,
                          on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(60) == 0
    assert not errors, errors[:3]
    assert metric(b, "strom_log_open_files") <= BUDGET + IN_USE
    assert metric(b, "strom_log_file_closes_total") > 0, "the budget was never needed"
    # 300 segment files, at most BUDGET + IN_USE of them open (plus a few client sockets).
    assert fds(b) <= before + BUDGET + IN_USE + 16, (fds(b), before)
    for t in topics:
        got = read_back(b, t)
        for part in range(PARTITIONS):
            assert got[part] == [(i, value(t, part, i)) for i in range(RECORDS)], (t, part)
    assert metric(b, "strom_log_open_files") <= BUDGET + IN_USE

    b.restart()
    assert metric(b, "strom_log_open_files") <= BUDGET + IN_USE
    for t in topics:
        out = subprocess.run(["kcat", "-C", "-b", b.bootstrap, "-t", t, "-o", "beginning", "-e", "-q",
                              "-f", "%p %o %s\n"], check=True, capture_output=True, timeout=60).stdout
        seen = sorted(tuple(line.split(b" ", 2)) for line in out.splitlines())
        want = sorted((str(part).encode(), str(i).encode(), value(t, part, i))
                      for part in range(PARTITIONS) for i in range(RECORDS))
        assert seen == want, t
    offsets = []
    for part in range(PARTITIONS):
        p.produce(topics[0], value=b"after", partition=part,
                  on_delivery=lambda e, m: offsets.append((e, m.offset())))
    assert p.flush(30) == 0
    assert offsets == [(None, RECORDS)] * PARTITIONS
    assert fds(b) <= before + BUDGET + IN_USE + 16


def test_a_budget_below_the_minimum_is_refused(broker_factory):
    b = broker_factory(start=False, log_max_open_files=3)
    r = subprocess.run(b.command(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "--log-max-open-files must be at least 16" in r.stderr + r.stdout


def test_more_segment_files_than_the_open_files_limit(broker_factory):
    """The issue's failure, scaled down: 150 partitions (450 segment files) under an open-files
    limit of 200 are created, written and read; before the budget, a broker opened three files
    per partition and refused the topic with KAFKA_STORAGE_ERROR."""
    b = broker_factory(start=False)
    plain = b.command
    b.command = lambda: ["prlimit", "--nofile=200:200", "--", *plain()]
    b.start()
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic("wide", 150, 1)], operation_timeout=30)["wide"].result(timeout=60)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
    for part in range(150):
        p.produce("wide", value=f"v{part}".encode(), partition=part)
    assert p.flush(60) == 0
    out = subprocess.run(["kcat", "-C", "-b", b.bootstrap, "-t", "wide", "-o", "beginning", "-e", "-q",
                          "-f", "%p %o %s\n"], check=True, capture_output=True, timeout=60).stdout
    assert sorted(out.decode().splitlines()) == sorted(f"{part} 0 v{part}" for part in range(150))
    assert fds(b) < 200
