"""confluent-kafka (librdkafka) against `strom serve` (issue 3): admin, 100k keyed messages with
headers and timestamps, consumed back by `assign` (no consumer group), and the places where
another Kafka-compatible broker failed librdkafka's own tests."""

import time
from collections import defaultdict

import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic)

pytestmark = pytest.mark.timeout(180)

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


DEFAULT_SOURCES = {ConfigSource.DEFAULT_CONFIG.value, ConfigSource.STATIC_BROKER_CONFIG.value,
                   ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value}


def source(entry):
    return entry.source.value if isinstance(entry.source, ConfigSource) else int(entry.source)


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker, name, partitions=1, config=None):
    a = admin(broker)  # keep the client alive until its future resolves
    futures = a.create_topics([NewTopic(name, partitions, 1, config=config or {})],
                              operation_timeout=10)
    futures[name].result(timeout=20)


def topic_partitions(broker, name, timeout=10):
    md = admin(broker).list_topics(name, timeout=timeout)
    t = md.topics[name]
    assert t.error is None, t.error
    return sorted(t.partitions)


def consume_assigned(broker, topic, partitions, expect, timeout_s=60):
    """Reads `expect` messages from offset 0 of every partition with `assign` (no group)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused-assign-only",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expect:
            assert time.monotonic() < deadline, f"consumed {len(out)} of {expect}"
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                out.append(m)
        # Nothing more than expected arrives.
        extra = [m for m in c.consume(num_messages=100, timeout=1.0) if not m.error()]
        assert not extra, f"{len(extra)} messages beyond the {expect} produced"
        return out
    finally:
        c.close()


def test_100k_keyed_messages_with_headers_round_trip(broker):
    topic, n, parts = "confluent-100k", 100_000, 8
    create(broker, topic, parts)
    assert topic_partitions(broker, topic) == list(range(parts))

    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 200000, "acks": "all", "enable.idempotence": False,
                  "compression.type": "lz4"})
    acked = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[int(msg.value())] = (msg.partition(), msg.offset())

    base_ts = int(time.time() * 1000) - 100_000
    for i in range(n):
        headers = [("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second")]
        p.produce(topic, value=str(i).encode(), key=f"key-{i % 1000}".encode(), headers=headers,
                  timestamp=base_ts + i, on_delivery=on_delivery)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "messages left unacknowledged"
    assert not errors, errors[:5]
    assert len(acked) == n

    msgs = consume_assigned(broker, topic, range(parts), n)
    assert len(msgs) == n
    by_partition = defaultdict(list)
    key_partition = {}
    for m in msgs:
        i = int(m.value())
        assert acked[i] == (m.partition(), m.offset()), f"message {i} not where it was acknowledged"
        assert m.key() == f"key-{i % 1000}".encode()
        assert key_partition.setdefault(m.key(), m.partition()) == m.partition(), "key moved partition"
        assert m.headers() == [("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second")]
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, base_ts + i)
        by_partition[m.partition()].append((m.offset(), i))
    assert sorted({int(m.value()) for m in msgs}) == list(range(n))
    for part, seen in by_partition.items():
        offsets = [o for o, _ in seen]
        assert offsets == list(range(len(seen))), f"partition {part}: offsets not contiguous from 0"
        values = [i for _, i in seen]
        assert values == sorted(values), f"partition {part}: out of order"
    assert len(by_partition) == parts, "the keys did not spread over every partition"

    # High watermarks agree with what was consumed.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    try:
        for part, seen in by_partition.items():
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            assert (lo, hi) == (0, len(seen))
    finally:
        c.close()


def test_admin_create_describe_alter_delete(broker):
    a = admin(broker)
    fs = a.create_topics([NewTopic("adm-a", 3, 1, config={"retention.ms": "3600000"}),
                          NewTopic("adm-b", 1, 1)], operation_timeout=10)
    for f in fs.values():
        f.result(timeout=20)
    # Already exists; invalid name; validate_only creates nothing.
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic("adm-a", 1, 1)])["adm-a"].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    a.create_topics([NewTopic("adm-dry", 1, 1)], validate_only=True)["adm-dry"].result(timeout=20)
    assert "adm-dry" not in a.list_topics(timeout=10).topics

    topics = a.list_topics(timeout=10).topics
    assert len(topics["adm-a"].partitions) == 3 and len(topics["adm-b"].partitions) == 1

    # DescribeConfigs: every entry, with its source; the override is a dynamic topic config.
    res = ConfigResource("topic", "adm-a")
    configs = a.describe_configs([res])[res].result(timeout=20)
    for name, default in KAFKA_TOPIC_DEFAULTS.items():
        assert name in configs, f"DescribeConfigs lacks {name}"
        entry = configs[name]
        if name == "retention.ms":
            assert entry.value == "3600000"
            assert source(entry) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
            assert not entry.is_default
        else:
            assert entry.value == default, f"{name}={entry.value}, Kafka's default is {default}"
            assert source(entry) in DEFAULT_SOURCES, (name, entry.source)

    # IncrementalAlterConfigs: SET one, DELETE the override.
    inc = ConfigResource("topic", "adm-a", incremental_configs=[
        ConfigEntry("max.message.bytes", "2048", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    a.incremental_alter_configs([inc])[inc].result(timeout=20)
    configs = a.describe_configs([res])[res].result(timeout=20)
    assert configs["max.message.bytes"].value == "2048"
    assert source(configs["max.message.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.ms"].value == KAFKA_TOPIC_DEFAULTS["retention.ms"]
    assert source(configs["retention.ms"]) in DEFAULT_SOURCES

    # An unknown config name is refused.
    bad = ConfigResource("topic", "adm-a", incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException):
        a.incremental_alter_configs([bad])[bad].result(timeout=20)

    # Delete; the topic disappears; deleting again is UNKNOWN_TOPIC_OR_PART.
    a.delete_topics(["adm-b"], operation_timeout=10)["adm-b"].result(timeout=20)
    deadline = time.monotonic() + 10
    while "adm-b" in a.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.1)
    with pytest.raises(KafkaException) as e:
        a.delete_topics(["adm-b"], operation_timeout=10)["adm-b"].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_partitions_returns_its_topics(broker):
    create(broker, "grow", 2)
    a = admin(broker)
    fs = a.create_partitions([NewPartitions("grow", 6)], operation_timeout=10)
    assert set(fs) == {"grow"}
    fs["grow"].result(timeout=20)
    assert topic_partitions(broker, "grow") == list(range(6))
    with pytest.raises(KafkaException):  # shrinking is refused
        a.create_partitions([NewPartitions("grow", 3)])["grow"].result(timeout=20)
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions("missing-topic", 3)])["missing-topic"].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The new partitions take writes.
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False})
    for part in range(6):
        p.produce("grow", value=b"v", partition=part)
    assert p.flush(30) == 0
    msgs = consume_assigned(broker, "grow", range(6), 6)
    assert sorted(m.partition() for m in msgs) == list(range(6))


def test_list_offsets_by_timestamp(broker):
    create(broker, "by-time", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "linger.ms": 0})
    t0 = int(time.time() * 1000) - 60_000
    for i in range(10):  # one batch per message, timestamps 1 s apart
        p.produce("by-time", value=f"m{i}".encode(), partition=0, timestamp=t0 + 1000 * i)
        assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    try:
        def lookup(ts):
            (tp,) = c.offsets_for_times([TopicPartition("by-time", 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            return tp.offset

        assert lookup(t0 - 5000) == 0
        assert lookup(t0) == 0
        assert lookup(t0 + 1) == 1
        assert lookup(t0 + 4500) == 5
        assert lookup(t0 + 9000) == 9
        assert lookup(t0 + 9001) == -1  # no such message: the end (-1)
        assert c.get_watermark_offsets(TopicPartition("by-time", 0), timeout=10) == (0, 10)
    finally:
        c.close()


def test_max_message_bytes_enforced(broker):
    create(broker, "small", 1, {"max.message.bytes": "1024"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "linger.ms": 0,
                  "message.timeout.ms": 10000, "retries": 0})
    results = []
    p.produce("small", value=b"x" * 4000, partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(15)
    p.produce("small", value=b"ok", partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(15)
    assert len(results) == 2
    assert results[0] is not None and results[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, results[0]
    assert results[1] is None
    msgs = consume_assigned(broker, "small", [0], 1)
    assert [m.value() for m in msgs] == [b"ok"] and msgs[0].offset() == 0


def test_auto_create_on_produce(broker_factory):
    broker = broker_factory(num_partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                  "message.timeout.ms": 15000})
    errs = []
    p.produce("auto-topic", value=b"hello", on_delivery=lambda e, m: errs.append(e))
    assert p.flush(20) == 0 and errs == [None]
    assert topic_partitions(broker, "auto-topic") == [0, 1]


def test_auto_create_off_produce_fails(broker_factory):
    broker = broker_factory(auto_create_topics=False)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                  "message.timeout.ms": 3000})
    errs = []
    p.produce("never-made", value=b"x", on_delivery=lambda e, m: errs.append(e))
    p.flush(10)
    assert len(errs) == 1 and errs[0] is not None
    assert "never-made" not in admin(broker).list_topics(timeout=10).topics
