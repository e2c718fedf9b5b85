"""Resource limits: a broker out of file handles answers with a clear error and keeps serving.

The broker raises its soft limit on open files to the hard limit at start and keeps its
segment files within `--log-max-open-files`; here the limit is pinned low (prlimit) and that
budget set above it, so topic creation runs out of descriptors: the failing creates get KAFKA_STORAGE_ERROR naming the cause, the topics created
before keep working, and once topics are deleted, creates succeed again.
"""

import shutil
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")


def create(admin, names):
    """Creates topics one request each; returns {name: None or KafkaError}."""
    out = {}
    for n in names:
        fut = admin.create_topics([NewTopic(n, 1, 1)], operation_timeout=10)[n]
        try:
            fut.result(timeout=20)
            out[n] = None
        except Exception as e:  # confluent raises KafkaException wrapping a KafkaError
            out[n] = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else e
    return out


def test_out_of_file_handles_is_a_clear_error_and_the_broker_keeps_serving(broker_factory):
    # Segment files stay within --log-max-open-files (by default within the open-files limit,
    # so these topics would all fit): a budget above the limit lets creation run out.
    b = broker_factory(start=False, log_max_open_files=1000)
    plain = b.command
    b.command = lambda: ["prlimit", "--nofile=96:96", "--", *plain()]
    b.start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    results = create(admin, [f"fd-{i}" for i in range(60)])
    ok = [n for n, e in results.items() if e is None]
    failed = {n: e for n, e in results.items() if e is not None}
    assert ok, "the first topics fit in the limit"
    assert failed, "the limit was reached"
    for n, e in failed.items():
        assert isinstance(e, KafkaError), (n, e)
        assert e.code() == KafkaError.KAFKA_STORAGE_ERROR, (n, e)
    assert b.running(), "the broker survived running out of descriptors"
    assert "Too many open files" in b.log, "the broker log names the cause"

    # A topic created before the limit still takes and serves records.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    errors = []
    for i in range(10):
        p.produce(ok[0], value=f"v{i}".encode(), on_delivery=lambda err, m: err and errors.append(err))
    assert p.flush(20) == 0 and not errors, errors

    # Deleting topics gives the descriptors back: the failed name can be created now.
    deleted = ok[-8:]
    for n, fut in admin.delete_topics(deleted, operation_timeout=10).items():
        fut.result(timeout=20)
    retry = next(iter(failed))
    deadline = time.monotonic() + 10
    while True:
        again = create(admin, [retry])[retry]
        if again is None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again is None, again

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "fd-check",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([ok[0]])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [f"v{i}".encode() for i in range(10)]
