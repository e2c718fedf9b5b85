"""The admin APIs of Kafka 4 tools and Kafka 4.1's topic configs (issue 14, parts 3 and 4),
over a real `strom serve`, through kafka-python's KafkaAdminClient, confluent-kafka's
AdminClient and raw frames (client quotas: neither client has them)."""

import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer as CConsumer, KafkaException, TopicPartition as CTP
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource as CRes,
                                   ResourceType)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError

import kwire

pytestmark = pytest.mark.timeout(180)

ELECTION_NOT_NEEDED = 84
NO_REASSIGNMENT_IN_PROGRESS = 85
INVALID_REPLICA_ASSIGNMENT = 39
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 1
LOG_DIR_NOT_FOUND = 57
INVALID_TIMESTAMP = 32
INVALID_CONFIG = 40

# Kafka 4.1's topic configs, less the compaction ones another part of the issue adds.
KAFKA_41_TOPIC_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "file.delete.delay.ms", "flush.messages", "flush.ms",
    "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.message.bytes", "message.timestamp.after.max.ms", "message.timestamp.before.max.ms",
    "message.timestamp.type", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
}


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)


def cadmin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def produce(broker, topic, n, partition=0, **extra):
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all",
                      **extra)
    try:
        for i in range(n):
            p.send(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=partition)
        p.flush(timeout=30)
    finally:
        p.close()


def offsets(broker, topic, partition=0):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, partition)
        return c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
    finally:
        c.close()


def log_batches(broker, topic, partition=0):
    out = []
    for f in sorted((broker.data_dir / f"{topic}-{partition}").glob("*.log")):
        out.extend(kwire.parse_batches(f.read_bytes()))
    return out


def test_kafka_python_admin_calls_that_used_to_drop_the_connection(broker):
    a = admin(broker)
    try:
        a.create_topics([NewTopic("adm", 5, 1)])
        produce(broker, "adm", 20)
        # DeleteRecords: the low watermark moves, ListOffsets earliest follows.
        r = a.delete_records({TopicPartition("adm", 0): 7})
        assert r[TopicPartition("adm", 0)]["low_watermark"] == 7
        assert offsets(broker, "adm") == (7, 20)
        # DescribeLogDirs: the data dir, per-partition sizes, total/usable bytes.
        dirs = a.describe_log_dirs()
        (entry,) = dirs
        (d,) = entry["log_dirs"]
        assert d["error_code"] == 0
        assert Path(d["log_dir"]) == broker.data_dir.resolve()
        assert d["total_bytes"] > 0 and 0 < d["usable_bytes"] <= d["total_bytes"]
        (t,) = [t for t in d["topics"] if t["name"] == "adm"]
        sizes = {p["partition_index"]: p["partition_size"] for p in t["partitions"]}
        assert set(sizes) == set(range(5)) and sizes[0] > 0 and sizes[1] == 0
        # DescribeTopicPartitions, paginated.
        first = a.describe_topic_partitions(["adm"], response_partition_limit=2)
        assert [p["partition_index"] for p in first["topics"][0]["partitions"]] == [0, 1]
        cur = first["next_cursor"]
        assert cur["topic_name"] == "adm" and cur["partition_index"] == 2
        rest = a.describe_topic_partitions(["adm"], response_partition_limit=10,
                                           cursor={"topic_name": "adm", "partition_index": 2})
        assert [p["partition_index"] for p in rest["topics"][0]["partitions"]] == [2, 3, 4]
        assert rest["next_cursor"] is None
        p0 = first["topics"][0]["partitions"][0]
        assert p0["leader_id"] == 1 and p0["isr_nodes"] == [1] and p0["leader_epoch"] == 0
        missing = a.describe_topic_partitions(["nope"])
        assert missing["topics"][0]["error_code"] == UNKNOWN_TOPIC_OR_PARTITION
        # ElectLeaders: one node, never needed.
        el = a.elect_leaders(0, {"adm": [0, 1], "nope": [0]}, raise_errors=False)
        codes = {(r.topic, p.partition_id): p.error_code for r in el.replica_election_results
                 for p in r.partition_result}
        assert codes == {("adm", 0): ELECTION_NOT_NEEDED, ("adm", 1): ELECTION_NOT_NEEDED,
                         ("nope", 0): UNKNOWN_TOPIC_OR_PARTITION}
        # Reassignment to the current replica is a no-op; anything else is refused.
        assert a.alter_partition_reassignments({TopicPartition("adm", 0): [1]}) == \
            {TopicPartition("adm", 0): None}
        from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError
        assert a.alter_partition_reassignments({TopicPartition("adm", 1): [2]}) == \
            {TopicPartition("adm", 1): InvalidReplicationAssignmentError}
        assert a.alter_partition_reassignments({TopicPartition("adm", 1): None}) == \
            {TopicPartition("adm", 1): NoReassignmentInProgressError}
        assert a.list_partition_reassignments() == {}
        # DescribeQuorum: one voter, this node.
        q = a.describe_metadata_quorum()
        (qp,) = q["topics"][0]["partitions"]
        assert qp["leader_id"] == 1 and [v["replica_id"] for v in qp["current_voters"]] == [1]
        assert q["nodes"][0]["listeners"][0]["port"] == broker.port
        # ListConfigResources.
        res = a.list_config_resources()
        assert "adm" in res["topic"] and res["broker"] == ["1"]
    finally:
        a.close()


def test_kafka_python_describe_features_lists_kafka_4_1s_feature_levels(broker):
    """ApiVersions v3+: the features Strom serves, as a Kafka 4.1 broker names them."""
    a = admin(broker)
    try:
        f = a.describe_features()
    finally:
        a.close()
    assert f["group.version"]["supported"] == (0, 1) and f["group.version"]["finalized"] == (1, 1)
    assert f["share.version"]["finalized"] == (1, 1)
    assert f["transaction.version"]["supported"] == (0, 2)
    assert f["transaction.version"]["finalized"] == (2, 2)
    assert f["group.version"]["finalized_epoch"] >= 1


def test_alter_configs_legacy_replaces_every_override(broker):
    a = admin(broker)
    try:
        a.create_topics([NewTopic("leg", 1, 1, topic_configs={"retention.ms": "1000",
                                                               "segment.ms": "50000"})])
        a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "leg",
                                        configs={"retention.bytes": "123456"})],
                        incremental=False)
        def described():
            out = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "leg")],
                                     config_filter="all")
            return {k: (v["value"] if isinstance(v, dict) else v)
                    for k, v in out["topic"]["leg"].items()}
        got = described()
        # kafka-python sends the other overrides along (AlterConfigs replaces them all).
        assert (got["retention.bytes"], got["retention.ms"], got["segment.ms"]) == \
            ("123456", "1000", "50000")
        # An AlterConfigs naming nothing resets every override.
        a.reset_configs([ConfigResource(ConfigResourceType.TOPIC, "leg")], incremental=False)
        got = described()
        assert (got["retention.bytes"], got["retention.ms"], got["segment.ms"]) == \
            ("-1", "604800000", "604800000")
        bad = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "leg",
                                              configs={"retention.ms": "soon"})],
                              incremental=False, raise_on_unknown=False)
        assert "InvalidConfig" in repr(bad["topic"]["leg"]), bad
        assert described()["retention.ms"] == "604800000"
    finally:
        a.close()


def test_delete_records_bad_input_gets_kafka_codes(broker):
    a = admin(broker)
    try:
        a.create_topics([NewTopic("drb", 2, 1)])
        produce(broker, "drb", 5)
        with kwire.Conn(broker.bootstrap) as c:
            def delete(topic, partition, offset):
                body = (struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">i", 1)
                        + struct.pack(">iq", partition, offset) + struct.pack(">i", 5000))
                r = c.call(21, 1, body)
                r.i32()  # throttle
                assert r.i32() == 1
                r.string()
                assert r.i32() == 1
                return r.i32(), r.i64(), r.i16()
            assert delete("drb", 0, 6) == (0, -1, OFFSET_OUT_OF_RANGE)
            assert delete("drb", 0, -5) == (0, -1, OFFSET_OUT_OF_RANGE)
            assert delete("drb", 9, 1) == (9, -1, UNKNOWN_TOPIC_OR_PARTITION)
            assert delete("nope", 0, 1) == (0, -1, UNKNOWN_TOPIC_OR_PARTITION)
            # -1: up to the high watermark.
            assert delete("drb", 0, -1) == (0, 5, 0)
            # The connection is still usable, nothing else changed.
            assert delete("drb", 1, 0) == (1, 0, 0)
        assert offsets(broker, "drb") == (5, 5)
        # AlterReplicaLogDirs: the one log dir is accepted, any other is LOG_DIR_NOT_FOUND.
        from kafka import TopicPartitionReplica
        from kafka.errors import LogDirNotFoundError, NoError
        ok = TopicPartitionReplica("drb", 0, 1)
        assert a.alter_replica_log_dirs({ok: str(broker.data_dir)}) == {ok: NoError}
        other = TopicPartitionReplica("drb", 1, 1)
        assert a.alter_replica_log_dirs({other: "/nonexistent/dir"}) == {other: LogDirNotFoundError}
    finally:
        a.close()


def test_fetch_below_the_log_start_is_out_of_range_and_delete_records_survives_kill_9(broker):
    cadm = cadmin(broker)
    cadm.create_topics([__import__("confluent_kafka.admin", fromlist=["NewTopic"]).NewTopic(
        "dk", 1, 1)])["dk"].result(30)
    produce(broker, "dk", 30)
    fut = cadm.delete_records([CTP("dk", 0, 12)])
    (res,) = fut.values()
    assert res.result(30).low_watermark == 12
    broker.kill()
    broker.start()
    assert offsets(broker, "dk") == (12, 30)
    # A fetch below the start: OFFSET_OUT_OF_RANGE (raw Fetch v4).
    with kwire.Conn(broker.bootstrap) as c:
        body = (struct.pack(">iiiib", -1, 0, 1, 1 << 20, 0) + struct.pack(">i", 1)
                + kwire.kstring("dk") + struct.pack(">i", 1)
                + struct.pack(">iqi", 0, 3, 1 << 20))
        r = c.call(1, 4, body)
        r.i32()
        assert r.i32() == 1
        r.string()
        assert r.i32() == 1
        assert r.i32() == 0
        assert r.i16() == OFFSET_OUT_OF_RANGE
    # A consumer reading from the beginning starts at 12.
    cons = CConsumer({"bootstrap.servers": broker.bootstrap, "group.id": "dk-g",
                      "auto.offset.reset": "earliest"})
    try:
        cons.subscribe(["dk"])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 18 and time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                got.append(m.offset())
        assert got == list(range(12, 30))
    finally:
        cons.close()


def test_confluent_admin_describe_and_incremental_append_subtract(broker):
    from confluent_kafka.admin import NewTopic as CNewTopic
    a = cadmin(broker)
    a.create_topics([CNewTopic("cf", 3, 1)])["cf"].result(30)
    desc = a.describe_topics(__import__("confluent_kafka").TopicCollection(["cf"]))["cf"].result(30)
    assert len(desc.partitions) == 3 and desc.partitions[0].leader.id == 1
    res = CRes(ResourceType.TOPIC, "cf", incremental_configs=[
        ConfigEntry("leader.replication.throttled.replicas", "0:1",
                    incremental_operation=AlterConfigOpType.APPEND)])
    a.incremental_alter_configs([res])[res].result(30)
    res = CRes(ResourceType.TOPIC, "cf", incremental_configs=[
        ConfigEntry("leader.replication.throttled.replicas", "1:1,2:1",
                    incremental_operation=AlterConfigOpType.APPEND)])
    a.incremental_alter_configs([res])[res].result(30)
    res = CRes(ResourceType.TOPIC, "cf", incremental_configs=[
        ConfigEntry("leader.replication.throttled.replicas", "1:1",
                    incremental_operation=AlterConfigOpType.SUBTRACT)])
    a.incremental_alter_configs([res])[res].result(30)
    cr = CRes(ResourceType.TOPIC, "cf")
    configs = a.describe_configs([cr])[cr].result(30)
    assert configs["leader.replication.throttled.replicas"].value == "0:1,2:1"
    assert KAFKA_41_TOPIC_CONFIGS <= set(configs), KAFKA_41_TOPIC_CONFIGS - set(configs)
    assert configs["compression.type"].value == "producer"
    assert configs["min.insync.replicas"].value == "1"
    assert configs["message.timestamp.after.max.ms"].value == "3600000"
    # APPEND on a config that is not a list: INVALID_CONFIG, nothing changed.
    bad = CRes(ResourceType.TOPIC, "cf", incremental_configs=[
        ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([bad])[bad].result(30)
    assert e.value.args[0].code() == INVALID_CONFIG
    # Delete records through confluent-kafka.
    produce(broker, "cf", 10, partition=2)
    (f,) = a.delete_records([CTP("cf", 2, 4)]).values()
    assert f.result(30).low_watermark == 4
    (f,) = a.delete_records([CTP("cf", 2, 99)]).values()
    with pytest.raises(KafkaException) as e:
        f.result(30)
    assert e.value.args[0].code() == OFFSET_OUT_OF_RANGE


@pytest.mark.parametrize("codec,cid", [("lz4", 3), ("zstd", 4), ("gzip", 1), ("snappy", 2)])
def test_compression_type_recompresses_batches_at_append(broker, codec, cid):
    a = admin(broker)
    try:
        a.create_topics([NewTopic("z", 1, 1, topic_configs={"compression.type": codec})])
    finally:
        a.close()
    from confluent_kafka import Producer as CProducer
    for sent_as in ("none", "gzip" if codec != "gzip" else "lz4"):
        p = CProducer({"bootstrap.servers": broker.bootstrap, "compression.type": sent_as,
                       "linger.ms": 20})
        for i in range(50):
            p.produce("z", f"v{i}".encode(), key=f"k{i}".encode(), partition=0)
        assert p.flush(30) == 0
    batches = log_batches(broker, "z")
    assert batches and all(b["compression"] == cid and b["crc_ok"] for b in batches), \
        [(b["compression"], b["crc_ok"]) for b in batches]
    assert sum(b["count"] for b in batches) == 100
    c = CConsumer({"bootstrap.servers": broker.bootstrap, "group.id": f"z-{codec}",
                   "auto.offset.reset": "earliest", "check.crcs": True})
    try:
        c.subscribe(["z"])
        vals = []
        deadline = time.monotonic() + 30
        while len(vals) < 100 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                vals.append(m.value())
    finally:
        c.close()
    assert vals == [f"v{i}".encode() for i in range(50)] * 2


def test_uncompressed_and_producer_compression_types(broker):
    a = admin(broker)
    try:
        a.create_topics([NewTopic("u", 1, 1, topic_configs={"compression.type": "uncompressed"}),
                         NewTopic("pr", 1, 1)])
        with pytest.raises(KafkaError):
            a.create_topics([NewTopic("bad", 1, 1, topic_configs={"compression.type": "brotli"})])
        with pytest.raises(KafkaError):
            a.create_topics([NewTopic("bad", 1, 1, topic_configs={"remote.storage.enable": "true"})])
    finally:
        a.close()
    from confluent_kafka import Producer as CProducer
    p = CProducer({"bootstrap.servers": broker.bootstrap, "compression.type": "gzip"})
    for t in ("u", "pr"):
        for i in range(20):
            p.produce(t, b"a compressible value " * 5, partition=0)
    assert p.flush(30) == 0
    assert {b["compression"] for b in log_batches(broker, "u")} == {0}
    assert {b["compression"] for b in log_batches(broker, "pr")} == {1}


def test_log_append_time_and_timestamp_bounds(broker):
    a = admin(broker)
    try:
        a.create_topics([
            NewTopic("lat", 1, 1, topic_configs={"message.timestamp.type": "LogAppendTime"}),
            NewTopic("tb", 1, 1, topic_configs={"message.timestamp.before.max.ms": "60000",
                                                 "message.timestamp.after.max.ms": "60000"}),
        ])
    finally:
        a.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all",
                      retries=0)
    try:
        before = int(time.time() * 1000)
        md = p.send("lat", b"x", timestamp_ms=1000).get(timeout=30)
        assert md.timestamp >= before - 1000, "LogAppendTime: the broker's time"
        now = int(time.time() * 1000)
        with pytest.raises(KafkaError) as e:
            p.send("tb", b"old", timestamp_ms=now - 3_600_000).get(timeout=30)
        assert "InvalidTimestamp" in repr(e.value)
        with pytest.raises(KafkaError) as e:
            p.send("tb", b"future", timestamp_ms=now + 3_600_000).get(timeout=30)
        assert "InvalidTimestamp" in repr(e.value)
        p.send("tb", b"ok", timestamp_ms=now).get(timeout=30)
    finally:
        p.close()
    assert offsets(broker, "tb") == (0, 1), "nothing of the refused batches was written"
    (b,) = log_batches(broker, "lat")
    assert b["attributes"] & 0x08 and b["max_timestamp"] >= before - 1000


def test_client_quotas_are_stored_durably(broker):
    """DescribeClientQuotas (48) / AlterClientQuotas (49) v0, raw frames."""
    def alter(c, entity_name, key, value, remove=False, validate_only=False):
        body = (struct.pack(">i", 1) + struct.pack(">i", 1) + kwire.kstring("user")
                + kwire.kstring(entity_name) + struct.pack(">i", 1) + kwire.kstring(key)
                + struct.pack(">d?", value, remove) + struct.pack(">?", validate_only))
        r = c.call(49, 0, body)
        r.i32()
        assert r.i32() == 1
        code = r.i16()
        return code

    def describe(c):
        body = struct.pack(">i", 1) + kwire.kstring("user") + struct.pack(">b", 2) \
            + struct.pack(">h", -1) + struct.pack(">?", False)
        r = c.call(48, 0, body)
        r.i32()
        assert r.i16() == 0
        r.string()
        out = {}
        for _ in range(r.i32()):
            ents = [(r.string(), r.string()) for _ in range(r.i32())]
            vals = {}
            for _ in range(r.i32()):
                k = r.string()
                vals[k] = r.take(">d")
            out[tuple(ents)] = vals
        return out

    with kwire.Conn(broker.bootstrap) as c:
        assert alter(c, "alice", "producer_byte_rate", 1024.0) == 0
        assert alter(c, "alice", "no_such_quota", 1.0) == 42  # INVALID_REQUEST
        assert alter(c, "bob", "consumer_byte_rate", 5.0, validate_only=True) == 0
    broker.kill()
    broker.start()
    with kwire.Conn(broker.bootstrap) as c:
        got = describe(c)
        assert got == {(("user", "alice"),): {"producer_byte_rate": 1024.0}}
        assert alter(c, "alice", "producer_byte_rate", 0, remove=True) == 0
        assert describe(c) == {}


def test_offset_for_leader_epoch_and_telemetry(broker):
    a = admin(broker)
    try:
        a.create_topics([NewTopic("ofle", 1, 1)])
    finally:
        a.close()
    produce(broker, "ofle", 9)
    with kwire.Conn(broker.bootstrap) as c:
        # OffsetForLeaderEpoch v3: replica_id, topics[(name, [(partition, current, epoch)])].
        body = (struct.pack(">i", -1) + struct.pack(">i", 1) + kwire.kstring("ofle")
                + struct.pack(">i", 2) + struct.pack(">iii", 0, 0, 0) + struct.pack(">iii", 1, -1, 0))
        r = c.call(23, 3, body)
        r.i32()
        assert r.i32() == 1
        assert r.string() == "ofle"
        assert r.i32() == 2
        assert (r.i16(), r.i32(), r.i32(), r.i64()) == (0, 0, 0, 9)
        assert (r.i16(), r.i32(), r.i32(), r.i64()) == (UNKNOWN_TOPIC_OR_PARTITION, 1, -1, -1)
    # librdkafka (confluent-kafka 2.16) asks for telemetry subscriptions: none, and it goes on.
    p = __import__("confluent_kafka").Producer({"bootstrap.servers": broker.bootstrap,
                                               "enable.metrics.push": True})
    p.produce("ofle", b"after")
    assert p.flush(30) == 0
    assert offsets(broker, "ofle") == (0, 10)


def strom(broker, *args, ok=True):
    import json
    import os
    import subprocess
    from conftest import strom_bin
    env = dict(os.environ, STROM_BOOTSTRAP=broker.bootstrap)
    p = subprocess.run([strom_bin(), *args], capture_output=True, text=True, env=env, timeout=60)
    if ok:
        assert p.returncode == 0, f"{args}: {p.stderr}"
        if "--json" in args:
            return json.loads(p.stdout)
    return p


def test_cli_delete_records_and_describe_log_dirs(broker):
    strom(broker, "topic", "create", "clidr", "--partitions", "2")
    produce(broker, "clidr", 10)
    out = strom(broker, "topic", "delete-records", "clidr", "--partition", "0", "--before", "4",
                "--json")
    assert out == {"topic": "clidr", "partition": 0, "log_start_offset": 4}
    d = strom(broker, "topic", "describe", "clidr", "--json")
    p0 = [p for p in d["partitions"] if p["partition"] == 0][0]
    assert p0["log_start_offset"] == 4 and p0["high_watermark"] == 10 and p0["size_bytes"] > 0
    (ld,) = d["log_dirs"]
    assert Path(ld["path"]) == broker.data_dir.resolve() and ld["usable_bytes"] > 0
    text = strom(broker, "topic", "describe", "clidr").stdout
    assert "SIZE-BYTES" in text and "log dir" in text
    # -1: everything.
    out = strom(broker, "topic", "delete-records", "clidr", "--partition", "0", "--before", "-1",
                "--json")
    assert out["log_start_offset"] == 10
    # Bad input: a clear error and a non-zero exit.
    bad = strom(broker, "topic", "delete-records", "clidr", "--partition", "0", "--before", "99",
                ok=False)
    assert bad.returncode != 0 and "OFFSET_OUT_OF_RANGE" in (bad.stderr + bad.stdout).upper().replace(" ", "_")
    bad = strom(broker, "topic", "delete-records", "clidr", "--partition", "7", "--before", "1",
                ok=False)
    assert bad.returncode != 0
    bad = strom(broker, "topic", "delete-records", "nope", "--partition", "0", "--before", "1",
                ok=False)
    assert bad.returncode != 0
