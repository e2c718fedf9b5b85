"""Idempotent producers (issue 5): a retried batch is never stored twice, across restarts too.

The raw-socket tests speak the Kafka protocol by hand (InitProducerId v0, Produce v3) so that
they can send the very same batch — same producer id, epoch and sequence — several times, which
no client library lets a test do on purpose. The last test uses confluent-kafka (librdkafka)
with enable.idempotence=true while the broker is killed and restarted under it.
"""

import random
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
UNKNOWN_PRODUCER_ID = 59


# --- CRC-32C (Castagnoli), as record batches use -------------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --- record batch v2 -----------------------------------------------------------------------

def varint(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def record_batch(values, producer_id=-1, epoch=-1, base_sequence=-1, timestamp=None) -> bytes:
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    records = bytearray()
    for i, v in enumerate(values):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        records += varint(len(body)) + body
    after_crc = struct.pack(
        ">hiqqqhii", 0, len(values) - 1, ts, ts, producer_id, epoch, base_sequence, len(values)
    ) + bytes(records)
    crc = crc32c(after_crc)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


# --- requests and responses ----------------------------------------------------------------

def kstring(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Conn:
    """One Kafka connection speaking non-flexible request versions."""

    def __init__(self, bootstrap):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def call(self, api_key, version, body):
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + kstring("idem-test")
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", self._recv_exact(4))
        resp = self._recv_exact(size)
        (corr,) = struct.unpack(">i", resp[:4])
        assert corr == self.correlation
        return resp[4:]

    def init_producer_id(self):
        resp = self.call(22, 0, kstring(None) + struct.pack(">i", 60000))
        _throttle, error, pid, epoch = struct.unpack(">ihqh", resp[:16])
        assert error == NONE, f"InitProducerId error {error}"
        return pid, epoch

    def produce(self, topic, partition, batch, acks=-1):
        body = kstring(None) + struct.pack(">hi", acks, 10000)
        body += struct.pack(">i", 1) + kstring(topic)
        body += struct.pack(">i", 1) + struct.pack(">i", partition)
        body += struct.pack(">i", len(batch)) + batch
        resp = self.call(0, 3, body)
        pos = 4  # topics array length
        (name_len,) = struct.unpack(">h", resp[pos:pos + 2])
        pos += 2 + name_len + 4  # name, partitions array length
        _index, error, base_offset, _append_time = struct.unpack(">ihqq", resp[pos:pos + 22])
        return error, base_offset


def create_topic(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    fut[name].result(timeout=20)


def consume_all(bootstrap, topic, partitions, timeout_s=60):
    """Every record of the topic, as {partition: [(offset, value), ...]}."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "unused-idem",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = {p: [] for p in range(partitions)}
    eof = set()
    deadline = time.time() + timeout_s
    while len(eof) < partitions and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                eof.add(msg.partition())
                continue
            raise AssertionError(msg.error())
        eof.discard(msg.partition())
        out[msg.partition()].append((msg.offset(), msg.value()))
    c.close()
    assert len(eof) == partitions, "did not reach the end of every partition in time"
    return out


def test_same_batch_twice_and_after_restarts(broker):
    create_topic(broker.bootstrap, "idem")
    conn = Conn(broker.bootstrap)
    pid, epoch = conn.init_producer_id()
    first = record_batch([b"a", b"b", b"c"], pid, epoch, 0)
    second = record_batch([b"d", b"e"], pid, epoch, 3)
    assert conn.produce("idem", 0, first) == (NONE, 0)
    assert conn.produce("idem", 0, first) == (NONE, 0), "a retried batch keeps its offset"
    assert conn.produce("idem", 0, second) == (NONE, 3)
    assert conn.produce("idem", 0, first) == (NONE, 0)
    conn.close()

    broker.restart()  # graceful: SIGTERM, start
    conn = Conn(broker.bootstrap)
    assert conn.produce("idem", 0, first) == (NONE, 0)
    assert conn.produce("idem", 0, second) == (NONE, 3)
    conn.close()

    broker.kill()  # crash: producer state comes back from the snapshot and the log tail
    broker.start()
    conn = Conn(broker.bootstrap)
    assert conn.produce("idem", 0, second) == (NONE, 3)
    third = record_batch([b"f"], pid, epoch, 5)
    assert conn.produce("idem", 0, third) == (NONE, 5)
    conn.close()

    records = consume_all(broker.bootstrap, "idem", 1)[0]
    assert records == [(i, v) for i, v in enumerate([b"a", b"b", b"c", b"d", b"e", b"f"])]


def test_a_new_producer_id_is_never_reused_after_restart(broker):
    conn = Conn(broker.bootstrap)
    before = {conn.init_producer_id()[0] for _ in range(3)}
    conn.close()
    broker.kill()
    broker.start()
    conn = Conn(broker.bootstrap)
    after = {conn.init_producer_id()[0] for _ in range(3)}
    conn.close()
    assert len(before) == 3 and len(after) == 3
    assert not before & after


def test_out_of_order_stale_epoch_and_unknown_producer_write_nothing(broker):
    create_topic(broker.bootstrap, "idem-errors")
    conn = Conn(broker.bootstrap)
    pid, epoch = conn.init_producer_id()
    assert conn.produce("idem-errors", 0, record_batch([b"x"] * 3, pid, epoch, 0)) == (NONE, 0)
    # A gap: sequence 5 where 3 is due.
    error, _ = conn.produce("idem-errors", 0, record_batch([b"gap"], pid, epoch, 5))
    assert error == OUT_OF_ORDER_SEQUENCE_NUMBER
    # A new epoch starts at sequence 0; afterwards the old epoch is fenced.
    assert conn.produce("idem-errors", 0, record_batch([b"y"], pid, epoch + 1, 0)) == (NONE, 3)
    error, _ = conn.produce("idem-errors", 0, record_batch([b"stale"], pid, epoch, 3))
    assert error == INVALID_PRODUCER_EPOCH
    # A producer id the broker never issued.
    error, _ = conn.produce("idem-errors", 0, record_batch([b"who"], pid + 10**9, 0, 0))
    assert error == UNKNOWN_PRODUCER_ID
    conn.close()
    records = consume_all(broker.bootstrap, "idem-errors", 1)[0]
    assert [v for _, v in records] == [b"x", b"x", b"x", b"y"]


def test_confluent_idempotent_producer_survives_broker_kills(broker):
    topic, partitions, total = "idem-kill", 4, 100_000
    create_topic(broker.bootstrap, topic, partitions)
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        "retry.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
    })
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    stop = threading.Event()

    def killer():
        rnd = random.Random()
        for _ in range(2):
            if stop.wait(rnd.uniform(0.3, 1.2)):
                return
            broker.kill()
            time.sleep(0.2)
            broker.start()

    t = threading.Thread(target=killer)
    t.start()
    try:
        for i in range(total):
            key = str(i % 97).encode()
            while True:
                try:
                    producer.produce(topic, value=str(i).encode(), key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 1000 == 0:
                producer.poll(0)
    finally:
        t.join(timeout=60)
        stop.set()
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} messages never acknowledged"
    assert not failures, failures[:5]

    records = consume_all(broker.bootstrap, topic, partitions, timeout_s=120)
    seen = []
    for p, recs in records.items():
        values = [int(v) for _, v in recs]
        offsets = [o for o, _ in recs]
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets not contiguous"
        assert values == sorted(values), f"partition {p}: out of order"
        seen.extend(values)
    assert len(seen) == total, f"{len(seen) - len(set(seen))} duplicates, {total - len(set(seen))} missing"
    assert sorted(seen) == list(range(total))
