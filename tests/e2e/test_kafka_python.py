"""kafka-python (a pure-Python client, no librdkafka) against `strom serve` (issue 3).

kafka-python 3 turns idempotence on by default; until InitProducerId exists (issue 5) these tests
set `enable_idempotence=False`.
"""

import time
from collections import defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource
from kafka.errors import (InvalidTopicError, KafkaError, MessageSizeTooLargeError,
                          TopicAlreadyExistsError, UnknownTopicOrPartitionError)

pytestmark = pytest.mark.timeout(240)

KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "segment.bytes": "1073741824",
    "max.message.bytes": "1048588",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "message.timestamp.type": "CreateTime",
}
DEFAULT_SOURCES = {"DEFAULT_CONFIG", "STATIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG"}


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)


def producer(broker, **extra):
    cfg = dict(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all", linger_ms=20,
               batch_size=256 * 1024, max_request_size=4 * 1024 * 1024, request_timeout_ms=20000)
    cfg.update(extra)
    return KafkaProducer(**cfg)


def consume_assigned(broker, topic, partitions, expect, timeout_s=120):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100,
                      max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expect:
            assert time.monotonic() < deadline, f"consumed {len(out)} of {expect}"
            for recs in c.poll(timeout_ms=500, max_records=50000).values():
                out.extend(recs)
        extra = [r for recs in c.poll(timeout_ms=1000).values() for r in recs]
        assert not extra, f"{len(extra)} records beyond the {expect} produced"
        return out
    finally:
        c.close()


def test_100k_keyed_messages_with_headers_round_trip(broker):
    topic, n, parts = "kpy-100k", 100_000, 8
    a = admin(broker)
    try:
        a.create_topics({topic: {"num_partitions": parts, "replication_factor": 1}})
    finally:
        a.close()

    p = producer(broker, compression_type="gzip")
    acked = {}
    errors = []
    base_ts = int(time.time() * 1000) - 100_000

    def ok(i):
        return lambda md: acked.__setitem__(i, (md.partition, md.offset))

    for i in range(n):
        f = p.send(topic, value=str(i).encode(), key=f"key-{i % 1000}".encode(),
                   headers=[("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second")],
                   timestamp_ms=base_ts + i)
        f.add_callback(ok(i))
        f.add_errback(errors.append)
    p.flush(timeout=120)
    p.close()
    assert not errors, errors[:5]
    assert len(acked) == n

    recs = consume_assigned(broker, topic, range(parts), n)
    assert len(recs) == n
    by_partition = defaultdict(list)
    key_partition = {}
    for r in recs:
        i = int(r.value)
        assert acked[i] == (r.partition, r.offset), f"message {i} not where it was acknowledged"
        assert r.key == f"key-{i % 1000}".encode()
        assert key_partition.setdefault(r.key, r.partition) == r.partition, "key moved partition"
        assert list(r.headers) == [("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second")]
        assert (r.timestamp_type, r.timestamp) == (0, base_ts + i)
        by_partition[r.partition].append((r.offset, i))
    assert sorted({int(r.value) for r in recs}) == list(range(n))
    assert len(by_partition) == parts
    for part, seen in by_partition.items():
        assert [o for o, _ in seen] == list(range(len(seen))), f"partition {part}: offsets not contiguous"
        values = [i for _, i in seen]
        assert values == sorted(values), f"partition {part}: out of order"


def test_admin_create_describe_alter_delete(broker):
    a = admin(broker)
    try:
        a.create_topics({"kpy-a": {"num_partitions": 3, "replication_factor": 1,
                                   "configs": {"retention.ms": "3600000"}},
                         "kpy-b": {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics({"kpy-a": {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(InvalidTopicError):
            a.create_topics({"bad name!": {"num_partitions": 1, "replication_factor": 1}})
        a.create_topics({"kpy-dry": {"num_partitions": 1, "replication_factor": 1}}, validate_only=True)
        assert "kpy-dry" not in a.list_topics()
        assert {"kpy-a", "kpy-b"} <= set(a.list_topics())

        def describe():
            out = a.describe_configs([ConfigResource("TOPIC", "kpy-a")], config_filter="all")
            return out["topic"]["kpy-a"]

        configs = describe()
        for name, default in KAFKA_TOPIC_DEFAULTS.items():
            assert name in configs, f"DescribeConfigs lacks {name}"
            if name == "retention.ms":
                assert configs[name]["value"] == "3600000"
                assert configs[name]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
            else:
                assert configs[name]["value"] == default, (name, configs[name])
                assert configs[name]["config_source"] in DEFAULT_SOURCES, (name, configs[name])

        # Alter (kafka-python picks IncrementalAlterConfigs when advertised, else AlterConfigs).
        result = a.alter_configs([ConfigResource("TOPIC", "kpy-a", {"max.message.bytes": "4096"})])
        assert result == {"topic": {"kpy-a": "OK"}}, result
        configs = describe()
        assert configs["max.message.bytes"]["value"] == "4096"
        assert configs["max.message.bytes"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"

        a.delete_topics(["kpy-b"])
        deadline = time.monotonic() + 10
        while "kpy-b" in a.list_topics():
            assert time.monotonic() < deadline, "deleted topic still listed"
            time.sleep(0.1)
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics(["kpy-b"])
    finally:
        a.close()


def test_create_partitions_and_list_offsets_by_time(broker):
    a = admin(broker)
    try:
        a.create_topics({"kpy-grow": {"num_partitions": 1, "replication_factor": 1}})
        resp = a.create_partitions({"kpy-grow": 4})
        assert [(r.name, r.error_code) for r in resp.results] == [("kpy-grow", 0)], \
            "CreatePartitions must return its topics"
    finally:
        a.close()

    p = producer(broker, linger_ms=0)
    t0 = int(time.time() * 1000) - 60_000
    for i in range(5):
        p.send("kpy-grow", value=f"m{i}".encode(), partition=3, timestamp_ms=t0 + 1000 * i).get(timeout=20)
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        assert c.partitions_for_topic("kpy-grow") == {0, 1, 2, 3}
        tp = TopicPartition("kpy-grow", 3)
        found = c.offsets_for_times({tp: t0 + 1500})[tp]
        assert found is not None and found.offset == 2 and found.timestamp == t0 + 2000
        assert c.offsets_for_times({tp: t0 + 10_000})[tp] is None
        assert c.beginning_offsets([tp])[tp] == 0 and c.end_offsets([tp])[tp] == 5
    finally:
        c.close()


def test_message_too_large_is_reported(broker):
    a = admin(broker)
    try:
        a.create_topics({"kpy-small": {"num_partitions": 1, "replication_factor": 1,
                                       "configs": {"max.message.bytes": "1024"}}})
    finally:
        a.close()
    p = producer(broker, linger_ms=0, retries=0)
    with pytest.raises(KafkaError) as e:
        p.send("kpy-small", value=b"z" * 4000).get(timeout=20)
    assert isinstance(e.value, MessageSizeTooLargeError), repr(e.value)
    assert p.send("kpy-small", value=b"fine").get(timeout=20).offset == 0
    p.close()
    recs = consume_assigned(broker, "kpy-small", [0], 1)
    assert [r.value for r in recs] == [b"fine"]
