"""Transactions end to end (issue #20, the write side): confluent-kafka's (librdkafka's)
transactional producer against `strom serve` — commit / abort / commit seen by read_committed
and read_uncommitted consumers, consume-transform-produce with send_offsets_to_transaction,
zombie fencing, the transaction timeout, kill -9 mid-transaction and between PrepareCommit and
the markers (the STROM_TEST_PAUSE_BEFORE_MARKERS test hook), the bad inputs with their Kafka
error codes (raw requests: no client sends them), kafka-python and kafkajs transactional
producers, and `strom txn list|describe`."""

import json
import os
import shutil
import struct
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from conftest import strom_bin

pytestmark = pytest.mark.timeout(180)

# Kafka error codes.
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_TRANSACTION_TIMEOUT = 50
CORRUPT_MESSAGE = 2
INVALID_RECORD = 87
PRODUCER_FENCED = 90

API_PRODUCE, API_FIND_COORDINATOR, API_INIT_PRODUCER_ID = 0, 10, 22
API_ADD_PARTITIONS, API_ADD_OFFSETS, API_END_TXN, API_TXN_OFFSET_COMMIT = 24, 25, 26, 28


def create_topic(b, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def txn_producer(b, tid, **extra):
    conf = {"bootstrap.servers": b.bootstrap, "transactional.id": tid, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


def consume(b, topic, isolation, want, partitions=1, timeout=10.0, settle=1.0):
    """Values read from the start of every partition of `topic` at `isolation`: until `want`
    arrived and then `settle` more seconds (so a surplus would show), or `timeout`."""
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"r-{uuid.uuid4()}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() > settle_until:
                break
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m.value().decode())
            if len(out) >= want and settle_until is None:
                settle_until = time.monotonic() + settle
    finally:
        c.close()
    return out


def end_offset(b, topic, partition=0):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"w-{uuid.uuid4()}"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


# --- confluent-kafka: the transactional producer -------------------------------------------

def test_commit_abort_commit_with_read_committed_and_read_uncommitted(broker):
    create_topic(broker, "tx", 2)
    p = txn_producer(broker, "app-1")
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(3):
        p.produce("tx", f"c1-{i}".encode(), partition=i % 2)
    p.commit_transaction(20)
    p.begin_transaction()
    for i in range(3):
        p.produce("tx", f"a-{i}".encode(), partition=i % 2)
    p.flush(10)
    p.abort_transaction(20)
    p.begin_transaction()
    for i in range(2):
        p.produce("tx", f"c2-{i}".encode(), partition=i % 2)
    p.commit_transaction(20)
    committed = consume(broker, "tx", "read_committed", 5, partitions=2)
    assert sorted(committed) == sorted([f"c1-{i}" for i in range(3)] + ["c2-0", "c2-1"])
    everything = consume(broker, "tx", "read_uncommitted", 8, partitions=2)
    assert sorted(everything) == sorted(committed + [f"a-{i}" for i in range(3)])
    # The markers take offsets: 3 transactions x (records + 1 marker) per partition.
    assert end_offset(broker, "tx", 0) + end_offset(broker, "tx", 1) == 8 + 6


def test_open_transaction_is_invisible_to_read_committed_until_commit(broker):
    create_topic(broker, "open")
    p = txn_producer(broker, "app-open")
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("open", b"pending")
    p.flush(10)
    assert consume(broker, "open", "read_committed", 1, timeout=3, settle=0) == []
    assert consume(broker, "open", "read_uncommitted", 1) == ["pending"]
    p.commit_transaction(20)
    assert consume(broker, "open", "read_committed", 1) == ["pending"]


def committed_offset(b, group, topic, partition=0, stable=False):
    """The group's committed offset. `stable`: as a read_committed consumer asks for it
    (OffsetFetch require_stable: the broker answers UNSTABLE_OFFSET_COMMIT, which librdkafka
    retries, while a transaction holding an offset for it is not complete)."""
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                  "isolation.level": "read_committed" if stable else "read_uncommitted"})
    try:
        (tp,) = c.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        c.close()


def test_consume_transform_produce_offsets_visible_only_at_commit(broker):
    create_topic(broker, "in")
    create_topic(broker, "out")
    src = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        src.produce("in", f"m{i}".encode())
    src.flush(10)
    group = "ctp"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    c.subscribe(["in"])
    p = txn_producer(broker, "ctp-1")
    p.init_transactions(20)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 5 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    assert len(got) == 5
    p.begin_transaction()
    for m in got:
        p.produce("out", m.value().upper())
    p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
    # Pending: the group has no committed offset before the commit.
    assert committed_offset(broker, group, "in") < 0
    p.commit_transaction(20)
    # Answered once PrepareCommit is durable; the offsets are the group's once the markers
    # are written, and a stable read waits for that.
    assert committed_offset(broker, group, "in", stable=True) == 5
    assert consume(broker, "out", "read_committed", 5) == [f"M{i}" for i in range(5)]
    # An aborted transaction's offsets are dropped.
    p.begin_transaction()
    p.produce("out", b"X")
    p.send_offsets_to_transaction([TopicPartition("in", 0, 2)], c.consumer_group_metadata(), 20)
    p.abort_transaction(20)
    assert committed_offset(broker, group, "in", stable=True) == 5
    c.close()


def test_zombie_is_fenced_by_a_second_instance(broker):
    create_topic(broker, "z")
    zombie = txn_producer(broker, "app-z")
    zombie.init_transactions(20)
    zombie.begin_transaction()
    zombie.produce("z", b"zombie")
    zombie.flush(10)
    fresh = txn_producer(broker, "app-z")
    fresh.init_transactions(20)  # aborts the zombie's open transaction, bumps the epoch
    fresh.begin_transaction()
    fresh.produce("z", b"fresh")
    fresh.commit_transaction(20)
    with pytest.raises(KafkaException) as e:
        zombie.produce("z", b"late")
        zombie.commit_transaction(10)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower()
    assert consume(broker, "z", "read_committed", 1) == ["fresh"]
    assert sorted(consume(broker, "z", "read_uncommitted", 2)) == ["fresh", "zombie"]


def test_transaction_timeout_aborts_and_fences(broker):
    create_topic(broker, "to")
    p = txn_producer(broker, "app-to", **{"transaction.timeout.ms": 1500})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("to", b"expired")
    p.flush(10)
    time.sleep(3)
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
    assert consume(broker, "to", "read_committed", 1, timeout=3, settle=0) == []
    # The timed-out abort's marker is there: the stable offset moved past it, and a new
    # instance's transaction is readable.
    q = txn_producer(broker, "app-to")
    q.init_transactions(20)
    q.begin_transaction()
    q.produce("to", b"after")
    q.commit_transaction(20)
    assert consume(broker, "to", "read_committed", 1) == ["after"]
    text = metrics_text(broker)
    if text is not None:
        assert "strom_transactions_timed_out_total 1" in text


def metrics_text(b):
    if b.http is None:
        return None
    import requests
    return requests.get(f"{b.http}/metrics", timeout=10).text


def test_metrics_count_commits_and_aborts(broker_factory):
    b = broker_factory(http=True)
    create_topic(b, "m")
    p = txn_producer(b, "app-m")
    p.init_transactions(20)
    for commit in (True, False, True):
        p.begin_transaction()
        p.produce("m", b"x")
        p.flush(10)
        (p.commit_transaction if commit else p.abort_transaction)(20)
    # EndTxn (v0-4) is answered once Prepare is durable; the counters move when the markers
    # and Complete are written just after it.
    want = ["strom_transactions_commits_total 2", "strom_transactions_aborts_total 1",
            "strom_transactions_open 0"]
    deadline = time.monotonic() + 10
    while not all(w in (text := metrics_text(b)) for w in want):
        assert time.monotonic() < deadline, [w for w in want if w not in text]
        time.sleep(0.05)


# --- crashes ------------------------------------------------------------------------------

def test_kill9_mid_transaction_aborts_it_after_restart(broker_factory):
    b = broker_factory()
    create_topic(b, "k")
    p = txn_producer(b, "app-k", **{"transaction.timeout.ms": 2000})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("k", b"c")
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce("k", b"lost")
    p.flush(10)
    b.kill()
    b.start()
    # The open transaction is aborted once its timeout passes; later ones are readable.
    q = txn_producer(b, "app-k2")
    q.init_transactions(20)
    q.begin_transaction()
    q.produce("k", b"later")
    q.commit_transaction(20)
    assert consume(b, "k", "read_committed", 2, timeout=15) == ["c", "later"]
    assert sorted(consume(b, "k", "read_uncommitted", 3)) == ["c", "later", "lost"]


def test_kill9_between_prepare_commit_and_markers_commits_after_restart(broker_factory):
    b = broker_factory(env={"STROM_TEST_PAUSE_BEFORE_MARKERS": "60000"})
    create_topic(b, "pk", 2)
    p = txn_producer(b, "app-pk")
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("pk", b"p0", partition=0)
    p.produce("pk", b"p1", partition=1)
    p.flush(10)
    t = threading.Thread(target=lambda: _ignore(lambda: p.commit_transaction(30)), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while "pausing before the markers" not in b.log:
        assert time.monotonic() < deadline, "the EndTxn never reached the test hook"
        time.sleep(0.05)
    b.kill()
    assert consume_offline_nothing_committed(b)
    b.env.pop("STROM_TEST_PAUSE_BEFORE_MARKERS")
    b.start()
    # PrepareCommit is completed at start: both partitions' records become committed.
    assert sorted(consume(b, "pk", "read_committed", 2, partitions=2, timeout=15)) == ["p0", "p1"]
    q = txn_producer(b, "app-pk2")
    q.init_transactions(20)
    q.begin_transaction()
    q.produce("pk", b"next", partition=0)
    q.commit_transaction(20)
    assert sorted(consume(b, "pk", "read_committed", 3, partitions=2)) == ["next", "p0", "p1"]


def consume_offline_nothing_committed(b):
    return not b.running()


def _ignore(f):
    try:
        f()
    except Exception:
        pass


# --- bad input (raw requests) ---------------------------------------------------------------

def init_pid(conn, tid, timeout_ms=60000):
    """InitProducerId v1: (error, producer id, epoch)."""
    r = conn.call(API_INIT_PRODUCER_ID, 1, kwire.kstring(tid) + struct.pack(">i", timeout_ms))
    r.i32()  # throttle
    return r.i16(), r.i64(), r.i16()


def end_txn(conn, tid, pid, epoch, commit):
    r = conn.call(API_END_TXN, 1, kwire.kstring(tid) + struct.pack(">qh?", pid, epoch, commit))
    r.i32()
    return r.i16()


def add_partitions(conn, tid, pid, epoch, topic, partition):
    body = kwire.kstring(tid) + struct.pack(">qh", pid, epoch)
    body += struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">ii", 1, partition)
    r = conn.call(API_ADD_PARTITIONS, 1, body)
    r.i32()
    results = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return results[0][1][0][1]


def add_offsets(conn, tid, pid, epoch, group):
    r = conn.call(API_ADD_OFFSETS, 1, kwire.kstring(tid) + struct.pack(">qh", pid, epoch) + kwire.kstring(group))
    r.i32()
    return r.i16()


def txn_offset_commit(conn, tid, group, pid, epoch, topic, partition, offset):
    body = kwire.kstring(tid) + kwire.kstring(group) + struct.pack(">qh", pid, epoch)
    body += struct.pack(">i", 1) + kwire.kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iq", partition, offset) + kwire.kstring(None)
    r = conn.call(API_TXN_OFFSET_COMMIT, 1, body)
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return topics[0][1][0][1]


def txn_batch(values, pid, epoch, seq=0, attributes=0x10):
    ts = int(time.time() * 1000)
    records = b"".join(kwire.record(i, v) for i, v in enumerate(values))
    n = len(values)
    after_crc = struct.pack(">hiqqqhii", attributes, n - 1, ts, ts, pid, epoch, seq, n) + records
    after_len = struct.pack(">ibI", 0, 2, kwire.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def produce_txn(conn, tid, topic, partition, batch, version=7):
    body = kwire.kstring(tid) + struct.pack(">hi", -1, 10000)
    body += struct.pack(">i", 1) + kwire.kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + kwire.kbytes(batch)
    r = conn.call(API_PRODUCE, version, body)
    (_, parts), = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return parts[0][1]


def test_bad_input_each_with_its_error_code_and_nothing_written(broker):
    create_topic(broker, "bad")
    with kwire.Conn(broker.bootstrap) as conn:
        # A timeout above transaction.max.timeout.ms (default 900000).
        assert init_pid(conn, "bad-1", 900001)[0] == INVALID_TRANSACTION_TIMEOUT
        err, pid, epoch = init_pid(conn, "bad-1")
        assert err == 0 and pid >= 0 and epoch == 0
        # Produce (v1 protocol: Produce v7) to a partition not in the transaction.
        assert produce_txn(conn, "bad-1", "bad", 0, txn_batch([b"x"], pid, epoch)) == INVALID_TXN_STATE
        assert end_offset(broker, "bad") == 0
        # TxnOffsetCommit for a group that was not added (AddOffsetsToTxn).
        assert txn_offset_commit(conn, "bad-1", "g-not-added", pid, epoch, "bad", 0, 1) == INVALID_TXN_STATE
        assert committed_offset(broker, "g-not-added", "bad") < 0
        # EndTxn with a fenced epoch: a second instance bumped it.
        assert add_partitions(conn, "bad-1", pid, epoch, "bad", 0) == 0
        assert produce_txn(conn, "bad-1", "bad", 0, txn_batch([b"in-txn"], pid, epoch)) == 0
        err, pid2, epoch2 = init_pid(conn, "bad-1")
        assert (err, pid2, epoch2) == (0, pid, epoch + 1)
        assert end_txn(conn, "bad-1", pid, epoch, True) == PRODUCER_FENCED
        # The zombie's batch: the epoch is fenced, nothing written.
        before = end_offset(broker, "bad")
        code = produce_txn(conn, "bad-1", "bad", 0, txn_batch([b"zombie"], pid, epoch, seq=1))
        assert code in (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED)
        assert end_offset(broker, "bad") == before
        # A control batch in a client's produce is refused by validation.
        control = txn_batch([b"\x00\x00\x00\x01"], pid2, epoch2, attributes=0x30)
        assert add_partitions(conn, "bad-1", pid2, epoch2, "bad", 0) == 0
        assert produce_txn(conn, "bad-1", "bad", 0, control) in (INVALID_RECORD, CORRUPT_MESSAGE)
        assert end_offset(broker, "bad") == before
        # EndTxn with nothing ongoing.
        assert end_txn(conn, "bad-1", pid2, epoch2, True) == 0
        assert end_txn(conn, "bad-1", pid2, epoch2, False) == INVALID_TXN_STATE
        # The in-transaction record was aborted (by the second InitProducerId).
    assert consume(broker, "bad", "read_committed", 1, timeout=3, settle=0) == []
    assert consume(broker, "bad", "read_uncommitted", 1) == ["in-txn"]


def test_find_coordinator_for_a_transactional_id(broker):
    with kwire.Conn(broker.bootstrap) as conn:
        r = conn.call(API_FIND_COORDINATOR, 1, kwire.kstring("app-x") + struct.pack(">b", 1))
        r.i32()
        assert r.i16() == 0
        r.string()
        assert r.i32() == 1  # node id


# --- other clients ------------------------------------------------------------------------

def test_kafka_python_transactional_producer(broker):
    from kafka import KafkaProducer
    create_topic(broker, "kp")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-1")
    p.init_transactions()
    p.begin_transaction()
    p.send("kp", b"kp-commit")
    p.commit_transaction()
    p.begin_transaction()
    p.send("kp", b"kp-abort")
    p.flush()
    p.abort_transaction()
    p.close()
    assert consume(broker, "kp", "read_committed", 1) == ["kp-commit"]
    assert sorted(consume(broker, "kp", "read_uncommitted", 2)) == ["kp-abort", "kp-commit"]


JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def test_kafkajs_transactional_producer(broker):
    node = shutil.which("node")
    if node is None or not os.path.isdir(os.path.join(JS_DIR, "node_modules", "kafkajs")):
        pytest.fail("node and tests/e2e/js/node_modules/kafkajs are needed (scripts/setup)")
    create_topic(broker, "kjs")
    script = os.path.join(JS_DIR, "txn_producer.js")
    out = subprocess.run([node, script, broker.bootstrap, "kjs"], capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert consume(broker, "kjs", "read_committed", 2) == ["js-1", "js-3"]
    assert sorted(consume(broker, "kjs", "read_uncommitted", 3)) == ["js-1", "js-2", "js-3"]


# --- CLI ----------------------------------------------------------------------------------

def test_cli_txn_list_and_describe(broker):
    create_topic(broker, "cli")
    p = txn_producer(broker, "cli-app")
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("cli", b"x")
    p.flush(10)
    run = lambda *a: subprocess.run([strom_bin(), *a, "--bootstrap", broker.bootstrap],
                                    capture_output=True, text=True, timeout=30)
    out = run("txn", "list")
    assert out.returncode == 0, out.stderr
    assert "cli-app" in out.stdout and "Ongoing" in out.stdout
    out = run("txn", "describe", "cli-app")
    assert out.returncode == 0, out.stderr
    assert "Ongoing" in out.stdout and "cli-0" in out.stdout
    p.commit_transaction(20)
    # Answered once PrepareCommit is durable; CompleteCommit follows when the markers are written.
    deadline = time.monotonic() + 10
    while "CompleteCommit" not in (out := run("txn", "describe", "cli-app")).stdout:
        assert time.monotonic() < deadline, out.stdout
        assert "PrepareCommit" in out.stdout, out.stdout
        time.sleep(0.05)
    out = run("txn", "describe", "nope")
    assert out.returncode != 0


# --- the v4+ batched AddPartitionsToTxn and DescribeProducers (flexible, raw) ---------------

API_DESCRIBE_PRODUCERS = 61


def add_partitions_v4(conn, tid, pid, epoch, topic, partition, verify_only):
    cs, n, tags = kwire.compact_string, kwire.compact_array_count, kwire.NO_TAGS
    body = n(1) + cs(tid) + struct.pack(">qh?", pid, epoch, verify_only)
    body += n(1) + cs(topic) + n(1) + struct.pack(">i", partition) + tags + tags + tags
    r = conn.call_flexible(API_ADD_PARTITIONS, 4, body)
    r.i32()
    assert r.i16() == 0

    def part(r):
        p, code = r.i32(), r.i16()
        r.tags()
        return p, code

    def topic_result(r):
        name, parts = r.cstring(), r.carray(part)
        r.tags()
        return name, parts

    def txn_result(r):
        t, topics = r.cstring(), r.carray(topic_result)
        r.tags()
        return t, topics

    ((t, ((name, ((p, code),)),)),) = r.carray(txn_result)
    assert (t, name, p) == (tid, topic, partition)
    return code


def describe_producers(conn, topic, partition):
    cs, n, tags = kwire.compact_string, kwire.compact_array_count, kwire.NO_TAGS
    body = n(1) + cs(topic) + n(1) + struct.pack(">i", partition) + tags + tags
    r = conn.call_flexible(API_DESCRIBE_PRODUCERS, 0, body)
    r.i32()

    def producer(r):
        v = dict(producer_id=r.i64(), epoch=r.i32(), last_sequence=r.i32(), last_timestamp=r.i64(),
                 coordinator_epoch=r.i32(), txn_start_offset=r.i64())
        r.tags()
        return v

    def part(r):
        p, code, _msg, producers = r.i32(), r.i16(), r.cstring(), r.carray(producer)
        r.tags()
        return p, code, producers

    def topic_result(r):
        name, parts = r.cstring(), r.carray(part)
        r.tags()
        return name, parts

    ((_, ((_, code, producers),)),) = r.carray(topic_result)
    return code, producers


def test_verify_only_add_partitions_and_describe_producers(broker):
    create_topic(broker, "vo", 2)
    with kwire.Conn(broker.bootstrap) as conn:
        err, pid, epoch = init_pid(conn, "vo-1")
        assert err == 0
        # Verify-only: not in the transaction, and nothing is added by asking.
        assert add_partitions_v4(conn, "vo-1", pid, epoch, "vo", 0, True) == INVALID_TXN_STATE
        assert add_partitions_v4(conn, "vo-1", pid, epoch, "vo", 0, True) == INVALID_TXN_STATE
        # The batched form adds; then verification passes, a fenced epoch does not.
        assert add_partitions_v4(conn, "vo-1", pid, epoch, "vo", 0, False) == 0
        assert add_partitions_v4(conn, "vo-1", pid, epoch, "vo", 0, True) == 0
        assert add_partitions_v4(conn, "vo-1", pid, epoch, "vo", 1, True) == INVALID_TXN_STATE
        assert produce_txn(conn, "vo-1", "vo", 0, txn_batch([b"a", b"b"], pid, epoch)) == 0
        code, producers = describe_producers(conn, "vo", 0)
        assert code == 0
        assert [(p["producer_id"], p["epoch"], p["last_sequence"], p["txn_start_offset"])
                for p in producers] == [(pid, epoch, 1, 0)]
        assert end_txn(conn, "vo-1", pid, epoch, True) == 0
        # EndTxn is answered once the commit is decided (durable Prepare); the markers that
        # end the partition's open transaction are written just after, as Kafka does.
        deadline = time.monotonic() + 10
        while True:
            code, producers = describe_producers(conn, "vo", 0)
            if producers[0]["txn_start_offset"] == -1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert producers[0]["txn_start_offset"] == -1
        assert describe_producers(conn, "nope", 0)[0] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert consume(broker, "vo", "read_committed", 2) == ["a", "b"]
