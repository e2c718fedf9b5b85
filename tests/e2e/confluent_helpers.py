"""confluent-kafka (librdkafka) helpers shared by the security suites (test_tls, test_sasl):
produce a list of values with acks=all and wait for every delivery, read a topic from the
start in a fresh group, and a kcat produce/consume round trip."""

import subprocess
import time
import uuid

from confluent_kafka import Consumer, Producer


def produce(bootstrap, topic, values, **conf):
    """Produce `values` to `topic` and flush; every message must be acknowledged. Returns the
    producer so a test can go on using its connections."""
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 20000, **conf})
    for v in values:
        p.produce(topic, v, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0, "messages not delivered"
    assert errors == []
    return p


def consume_all(bootstrap, topic, n, commit=False, **conf):
    """Up to `n` values of `topic` from the earliest offset, read by a new group member
    (committing its offsets when `commit`), within 40 s."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": commit, **conf})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + 40
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def kcat_round_trip(bootstrap, topic, conf):
    """kcat produces three lines to `topic` and reads them back from the beginning, with the
    `-X` settings in `conf`."""
    p = subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, *conf], input=b"a\nb\nc\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-o", "beginning", *conf],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [b"a", b"b", b"c"]
