"""The Kafka door's server behaviour: long polling, pipelining, many idle connections, old
non-flexible protocol versions (aiokafka), and Fetch errors."""

import asyncio
import socket
import struct
import threading
import time

import pytest

import kwire
from kwire import Conn

pytestmark = pytest.mark.timeout(120)

FETCH = 1


def setup_topic(broker, name, partitions=1):
    with Conn(broker.bootstrap) as c:
        assert c.create_topic(name, partitions) == kwire.NONE


def fetch_v4(c, topic, partition, offset, max_wait_ms, min_bytes):
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, 1 << 20, 0)
    body += struct.pack(">i", 1) + kwire.kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20)
    r = c.call(FETCH, 4, body)
    r.i32()

    def part(r):
        p = {"partition": r.i32(), "error_code": r.i16(), "high_watermark": r.i64(),
             "last_stable_offset": r.i64()}
        r.array(lambda r: (r.i64(), r.i64()))
        p["records"] = r.bytes_() or b""
        return p

    (_, (p,)), = r.array(lambda r: (r.string(), r.array(part)))
    return p


def test_fetch_long_poll_is_woken_by_a_produce(broker):
    setup_topic(broker, "poll")
    result = {}

    def waiter():
        with Conn(broker.bootstrap, timeout=30) as c:
            started = time.monotonic()
            result["p"] = fetch_v4(c, "poll", 0, 0, max_wait_ms=20000, min_bytes=1)
            result["waited"] = time.monotonic() - started

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    with Conn(broker.bootstrap) as c:
        assert c.produce("poll", 0, kwire.record_batch([b"wake"])) == (kwire.NONE, 0)
    t.join(30)
    p = result["p"]
    assert p["error_code"] == kwire.NONE and p["high_watermark"] == 1
    assert kwire.uncompressed_values(next(kwire.parse_batches(p["records"]))) == [b"wake"]
    # Woken by the append, not by the 20 s max wait.
    assert result["waited"] < 15


def test_fetch_with_nothing_new_waits_max_wait_then_answers_empty(broker):
    setup_topic(broker, "idle-poll")
    with Conn(broker.bootstrap) as c:
        started = time.monotonic()
        p = fetch_v4(c, "idle-poll", 0, 0, max_wait_ms=300, min_bytes=1)
        assert time.monotonic() - started >= 0.25, "returned before max_wait without data"
        assert (p["error_code"], p["high_watermark"], p["records"]) == (kwire.NONE, 0, b"")


def test_fetch_errors(broker):
    setup_topic(broker, "errs")
    with Conn(broker.bootstrap) as c:
        assert c.produce("errs", 0, kwire.record_batch([b"a", b"b"])) == (kwire.NONE, 0)
        assert fetch_v4(c, "errs", 0, 5, 0, 0)["error_code"] == kwire.OFFSET_OUT_OF_RANGE
        assert fetch_v4(c, "errs", 0, -1, 0, 0)["error_code"] == kwire.OFFSET_OUT_OF_RANGE
        assert fetch_v4(c, "errs", 3, 0, 0, 0)["error_code"] == kwire.UNKNOWN_TOPIC_OR_PARTITION
        assert fetch_v4(c, "nope", 0, 0, 0, 0)["error_code"] == kwire.UNKNOWN_TOPIC_OR_PARTITION
        # At the end: no error, no data.
        p = fetch_v4(c, "errs", 0, 2, 0, 0)
        assert (p["error_code"], p["records"]) == (kwire.NONE, b"")


def test_pipelined_requests_are_answered_in_order(broker):
    setup_topic(broker, "pipe")
    n = 200
    with Conn(broker.bootstrap) as c:
        ids = []
        for i in range(n):
            body = struct.pack(">hhi", -1, -1, 10000) + struct.pack(">i", 1) + kwire.kstring("pipe")
            body += struct.pack(">i", 1) + struct.pack(">i", 0) + kwire.kbytes(kwire.record_batch([f"m{i}".encode()]))
            ids.append(c.send_request(kwire.PRODUCE, 3, body))
        offsets = []
        for corr in ids:  # recv_response asserts the correlation id is the expected one
            r = c.recv_response(corr)
            ((_, parts),) = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
            assert parts[0][1] == kwire.NONE
            offsets.append(parts[0][2])
    assert offsets == list(range(n))
    values = [v for b in kwire.fetch_all(broker.bootstrap, "pipe", 0) for v in kwire.uncompressed_values(b)]
    assert values == [f"m{i}".encode() for i in range(n)]


def test_thousands_of_idle_connections_do_not_stop_service(broker):
    setup_topic(broker, "crowd")
    idle = []
    try:
        for _ in range(2000):
            s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            idle.append(s)
        with Conn(broker.bootstrap) as c:
            for i in range(20):
                assert c.produce("crowd", 0, kwire.record_batch([b"x"])) == (kwire.NONE, i)
            assert fetch_v4(c, "crowd", 0, 0, 0, 0)["high_watermark"] == 20
    finally:
        for s in idle:
            s.close()
    assert broker.running()


def test_aiokafka_old_protocol_versions_round_trip(broker):
    aiokafka = pytest.importorskip("aiokafka")
    setup_topic(broker, "aio", partitions=3)
    n = 3000

    async def run():
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="gzip",
                                             enable_idempotence=False, linger_ms=5)
        await producer.start()
        try:
            futs = [await producer.send("aio", key=f"k{i % 50}".encode(), value=f"v{i}".encode(),
                                        headers=[("h", str(i).encode())])
                    for i in range(n)]
            acked = [await f for f in futs]
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                             auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            consumer.assign([aiokafka.TopicPartition("aio", p) for p in range(3)])
            got = []
            deadline = time.monotonic() + 60
            while len(got) < n and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                for msgs in batch.values():
                    got.extend(msgs)
        finally:
            await consumer.stop()
        return acked, got

    acked, got = asyncio.run(run())
    assert len(got) == n
    where = {(m.partition, m.offset) for m in acked}
    assert {(m.partition, m.offset) for m in got} == where
    by_key = {}
    for m in got:
        assert by_key.setdefault(m.key, m.partition) == m.partition, "a key moved partition"
        assert m.headers == (("h", m.value[1:]),) or list(m.headers) == [("h", m.value[1:])]
    assert sorted(int(m.value[1:]) for m in got) == list(range(n))


def test_invalid_required_acks_writes_nothing(broker):
    setup_topic(broker, "acks")
    with Conn(broker.bootstrap) as c:
        assert c.produce("acks", 0, kwire.record_batch([b"x"]), acks=2)[0] == 21  # INVALID_REQUIRED_ACKS
        assert c.produce("acks", 0, kwire.record_batch([b"ok"])) == (kwire.NONE, 0)


def test_describe_cluster_and_unsupported_configs(broker):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    cluster = a.describe_cluster().result(timeout=20)
    assert cluster.cluster_id and len(cluster.nodes) == 1
    node = cluster.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", broker.port)
    # A cleanup policy Kafka does not have is refused, not silently ignored.
    fs = a.create_topics([NewTopic("compacted", 1, 1, config={"cleanup.policy": "shred"})])
    with pytest.raises(Exception) as e:
        fs["compacted"].result(timeout=20)
    assert "cleanup.policy" in str(e.value)
