"""Old clients against `strom serve` (issue 14, part 2): the request versions Kafka 4 removed
(KIP-896) that clients still in use send.

- Go's sarama 1.22 (Debian's golang-github-shopify-sarama-dev, built in GOPATH mode from
  tests/e2e/go/sarama_client.go) at Kafka 0.10.2's versions: Produce v2 / Fetch v3 with magic 1
  message sets, a consumer group committing with OffsetCommit v1, resuming after a broker
  restart from the committed offset.
- kafka-python with `api_version` (0,8,1) .. (0,10,0): Produce v0-v2, Fetch v0-v2, OffsetCommit
  v0-v2, OffsetFetch v0-v1, ListOffsets v0, Metadata v0, and its admin client at (0,10,1) /
  (0,11): CreateTopics v0, DeleteTopics v0, DescribeConfigs v0.
- Debian's kcat (librdkafka 2.0.2) with `api.version.request=false` and an old
  `broker.version.fallback` (0.8.2, 0.9.0): magic 0 message sets, uncompressed, gzip, snappy,
  lz4 (with Kafka's wrong lz4 descriptor checksum of magic 0, KAFKA-3160).
- A malformed old message set (bad CRC, truncated) is CORRUPT_MESSAGE and nothing is written.

Every stored batch is read back raw (Fetch v4) to show that only v2 batches reach the log."""

import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import kwire
from kwire import Conn

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent
GOPATH = "/usr/share/gocode"
SARAMA_SRC = Path(GOPATH) / "src" / "github.com" / "Shopify" / "sarama"


@pytest.fixture(scope="module")
def sarama_client():
    """The sarama test client, built once per module in GOPATH mode against Debian's sarama."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (scripts/setup installs Debian's golang-go)")
    if not SARAMA_SRC.is_dir():
        pytest.skip(f"sarama is not installed at {SARAMA_SRC} "
                    "(scripts/setup installs golang-github-shopify-sarama-dev)")
    out = Path(tempfile.mkdtemp(prefix="strom-sarama-"))
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOCACHE=str(out / "cache"),
               GOFLAGS="")
    exe = out / "sarama_client"
    p = subprocess.run([go, "build", "-o", str(exe), str(HERE / "go" / "sarama_client.go")],
                       env=env, capture_output=True, timeout=600)
    assert p.returncode == 0, f"go build failed: {p.stderr.decode(errors='replace')}"
    yield str(exe)
    shutil.rmtree(out, ignore_errors=True)


def sarama(exe, broker, *args, timeout=90):
    p = subprocess.run([exe, args[0], "-brokers", broker.bootstrap, *args[1:]],
                       capture_output=True, timeout=timeout)
    assert p.returncode == 0, (f"sarama_client {' '.join(args)} exited {p.returncode}: "
                               f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout.decode().split()


def stored(broker, topic, partition=0, codec=0):
    """The values of every stored batch, read raw: all v2, CRCs good, compressed with `codec`
    (the old producer's, kept by the up-conversion) or none. Values are read from uncompressed and
    gzip batches (the venv has no snappy/lz4 codec); for the others, None per record."""
    batches = kwire.fetch_all(broker.bootstrap, topic, partition)
    assert all(b["crc_ok"] for b in batches), "a stored batch has a bad CRC"
    assert all(b["magic"] == 2 for b in batches), "a non-v2 batch was stored"
    # librdkafka sends a set uncompressed when compressing would not make it smaller.
    assert all(b["compression"] in (0, codec) for b in batches), \
        [b["compression"] for b in batches]
    assert not codec or any(b["compression"] == codec for b in batches), "the codec was lost"
    out = []
    for b in batches:
        if b["compression"] == 1:
            import gzip
            raw = b["raw"][:61] + gzip.decompress(b["raw"][61:])
            b = dict(b, raw=raw, compression=0)
        if b["compression"] == 0:
            out += kwire.uncompressed_values(b)
        else:
            out += [None] * b["count"]
    return out


# --- sarama ----------------------------------------------------------------------------------


def test_sarama_produces_consumes_in_a_group_commits_and_resumes_after_restart(
        broker, sarama_client):
    topic, group = "sarama-orders", "sarama-group"
    assert sarama(sarama_client, broker, "produce", "-topic", topic, "-prefix", "a",
                  "-n", "10") == ["produced", "10"]
    got = sarama(sarama_client, broker, "consume", "-topic", topic, "-group", group,
                 "-n", "10", "-timeout", "60")
    assert got == [f"a-{i}" for i in range(10)]
    # The group's offset was committed with OffsetCommit v1 and survives a restart.
    broker.restart()
    assert sarama(sarama_client, broker, "produce", "-topic", topic, "-prefix", "b",
                  "-n", "5") == ["produced", "5"]
    got = sarama(sarama_client, broker, "consume", "-topic", topic, "-group", group,
                 "-n", "5", "-timeout", "60")
    assert got == [f"b-{i}" for i in range(5)], "the restarted group re-read or skipped records"
    # sarama's own default version (0.8.2: Produce v0, magic 0) produces too.
    assert sarama(sarama_client, broker, "produce", "-topic", topic, "-prefix", "c",
                  "-n", "3", "-version", "0.8.2.0") == ["produced", "3"]
    got = sarama(sarama_client, broker, "consume", "-topic", topic, "-group", group,
                 "-n", "3", "-timeout", "60")
    assert got == [f"c-{i}" for i in range(3)]
    assert stored(broker, topic) == [f"a-{i}".encode() for i in range(10)] + \
        [f"b-{i}".encode() for i in range(5)] + [f"c-{i}".encode() for i in range(3)]
    with Conn(broker.bootstrap) as c:
        assert committed_v1(c, group, topic) == 18


def committed_v1(c, group, topic, partition=0):
    """OffsetFetch v1 of one partition."""
    body = kwire.kstring(group) + struct.pack(">i", 1) + kwire.kstring(topic)
    body += struct.pack(">ii", 1, partition)
    r = c.call(9, 1, body)
    ((_, ((_, offset, _meta, err),)),) = r.array(
        lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i64(), r.string(), r.i16()))))
    assert err == kwire.NONE
    return offset


# --- kafka-python ----------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", [(0, 8, 2), (0, 9), (0, 10, 0)],
                         ids=["0.8.2", "0.9", "0.10.0"])
def test_kafka_python_old_versions_produce_consume_and_commit(broker, api_version):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    name = "kp-" + "-".join(map(str, api_version))
    tp = TopicPartition(name, 0)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, api_version=api_version,
                      compression_type="gzip")
    for i in range(6):
        p.send(name, key=b"k%d" % i, value=b"v%d" % i).get(timeout=20)
    p.close()

    def consumer():
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=api_version,
                          group_id="g-" + name, enable_auto_commit=False,
                          auto_offset_reset="earliest", consumer_timeout_ms=4000)
        c.assign([tp])
        return c

    c = consumer()
    got = []
    for m in c:
        got.append((m.key, m.value))
        if len(got) == 4:
            break
    c.commit()
    assert c.committed(tp) == 4
    assert c.end_offsets([tp]) == {tp: 6}  # ListOffsets v0 below 0.10.1
    c.close()
    assert got == [(b"k%d" % i, b"v%d" % i) for i in range(4)]
    # A new consumer of the group resumes at the committed offset.
    c = consumer()
    rest = [m.value for m in c]
    c.close()
    assert rest == [b"v4", b"v5"]
    assert stored(broker, name, codec=1) == [b"v%d" % i for i in range(6)]


def test_kafka_python_zookeeper_era_offset_commit_v0_and_fetch_v0(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    tp = TopicPartition("kp-081", 0)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, api_version=(0, 9))
    for i in range(3):
        p.send("kp-081", b"x%d" % i).get(timeout=20)
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=(0, 8, 1),
                      group_id="g081", enable_auto_commit=False)
    c.assign([tp])
    c.commit({tp: OffsetAndMetadata(2, "meta", -1)})  # OffsetCommit v0
    assert c.committed(tp) == 2  # OffsetFetch v0
    c.close()
    with Conn(broker.bootstrap) as conn:
        assert committed_v1(conn, "g081", "kp-081") == 2


def test_kafka_python_old_admin_create_describe_delete(broker):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, api_version=(0, 10, 1))
    r = a.create_topics([NewTopic("old-admin", 2, 1, topic_configs={"retention.ms": "123456"})])
    assert r["topics"] == [{"name": "old-admin", "error_code": 0}]  # CreateTopics v0
    again = a.create_topics([NewTopic("old-admin", 2, 1)], raise_errors=False)
    assert again["topics"][0]["error_code"] == 36  # TOPIC_ALREADY_EXISTS
    a.close()
    with Conn(broker.bootstrap) as c:
        assert c.metadata(["old-admin"])["old-admin"] == (kwire.NONE, 2)
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, api_version=(0, 11))
    configs = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "old-admin")])
    # DescribeConfigs v0: only the non-default value is "modified".
    modified = configs["topic"]["old-admin"]
    assert set(modified) == {"retention.ms"}, modified
    assert modified["retention.ms"]["value"] == "123456"
    a.close()
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, api_version=(0, 10, 1))
    r = a.delete_topics(["old-admin"])  # DeleteTopics v0
    assert r["topics"] == [{"name": "old-admin", "error_code": 0}]
    a.close()
    with Conn(broker.bootstrap) as c:
        assert c.metadata(["old-admin"])["old-admin"][0] == kwire.UNKNOWN_TOPIC_OR_PARTITION


def test_kafka_python_create_topics_v1_validate_only(broker):
    """CreateTopics v1 (Kafka 0.10.2's, the first with validate_only): a validation creates
    nothing (v0 has no such field, so a v0 request would have created the topic)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, api_version=(0, 10, 2))
    try:
        r = a.create_topics([NewTopic("old-v1", 3, 1)], validate_only=True)
        assert [(t["name"], t["error_code"]) for t in r["topics"]] == [("old-v1", 0)]
        with Conn(broker.bootstrap) as c:
            assert c.metadata(["old-v1"])["old-v1"][0] == kwire.UNKNOWN_TOPIC_OR_PARTITION
        bad = a.create_topics([NewTopic("old-v1", 3, 1, topic_configs={"retention.ms": "soon"})],
                              validate_only=True, raise_errors=False)
        assert bad["topics"][0]["error_code"] == 40  # INVALID_CONFIG, with its message
        assert bad["topics"][0]["error_message"]
        r = a.create_topics([NewTopic("old-v1", 3, 1)])
        assert r["topics"][0]["error_code"] == 0
    finally:
        a.close()
    with Conn(broker.bootstrap) as c:
        assert c.metadata(["old-v1"])["old-v1"] == (kwire.NONE, 3)


def test_metadata_v0(broker):
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("meta-v0", 3) == kwire.NONE
        body = struct.pack(">i", 1) + kwire.kstring("meta-v0")
        r = c.call(kwire.METADATA, 0, body)
        brokers = r.array(lambda r: (r.i32(), r.string(), r.i32()))
        assert brokers and brokers[0][2] == broker.port
        topics = r.array(lambda r: (r.i16(), r.string(), r.array(
            lambda r: (r.i16(), r.i32(), r.i32(), r.array(lambda r: r.i32()),
                       r.array(lambda r: r.i32())))))
        assert [(e, n, len(p)) for e, n, p in topics] == [(0, "meta-v0", 3)]


# --- kcat (librdkafka) with message sets ----------------------------------------------------

# librdkafka's fallbacks without ApiVersions: 0.8.2 sends Produce v0 / Fetch v0, 0.9.0 Produce
# v1 / Fetch v1, both with magic 0 message sets (from 0.10.0 on it asks ApiVersions anyway and
# sends v2 batches; magic 1 comes from sarama and kafka-python above).
OLD = ("0.8.2", "0.9.0")


def kcat(broker, *args, stdin=None):
    cmd = ["kcat", "-b", broker.bootstrap, "-X", "socket.timeout.ms=10000", *args]
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode()}"
    return p.stdout


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (scripts/setup)")
@pytest.mark.parametrize("fallback", sorted(OLD))
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
def test_kcat_old_message_sets_produce_and_consume(broker, fallback, codec):
    topic = f"kcat-{fallback}-{codec}".replace(".", "_")
    old = ["-X", "api.version.request=false", "-X", f"broker.version.fallback={fallback}"]
    lines = [f"key{i}:value {i} {codec}" for i in range(20)]
    kcat(broker, "-P", "-t", topic, "-K:", "-z", codec, *old,
         stdin=("\n".join(lines) + "\n").encode())
    # Read back by the same old client (Fetch v0-v2, down-converted to its magic) ...
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k:%s\\n", *old)
    assert out.decode().splitlines() == lines
    # ... from the middle (a fetch offset inside a stored batch) ...
    out = kcat(broker, "-C", "-t", topic, "-o", "15", "-e", "-q", "-f", "%o %s\\n", *old)
    assert out.decode().splitlines() == [f"{i} value {i} {codec}" for i in range(15, 20)]
    # ... and by a current client (the stored batches are v2).
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k:%s\\n")
    assert out.decode().splitlines() == lines
    codec_id = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3}[codec]
    values = stored(broker, topic, codec=codec_id)
    if codec in ("none", "gzip"):
        assert [v.decode() for v in values] == [l.split(":", 1)[1] for l in lines]
    else:
        assert len(values) == len(lines)


# --- malformed message sets ------------------------------------------------------------------


def crc32(data):
    import zlib
    return zlib.crc32(data) & 0xFFFFFFFF


def message(value, magic=1, key=None, attributes=0, offset=0, timestamp=1_700_000_000_000):
    body = struct.pack(">bb", magic, attributes)
    if magic == 1:
        body += struct.pack(">q", timestamp)
    body += kwire.kbytes(key) + kwire.kbytes(value)
    msg = struct.pack(">I", crc32(body)) + body
    return struct.pack(">qi", offset, len(msg)) + msg


def produce_old(c, topic, message_set, version=0, acks=-1):
    body = struct.pack(">hi", acks, 10000) + struct.pack(">i", 1) + kwire.kstring(topic)
    body += struct.pack(">ii", 1, 0) + kwire.kbytes(message_set)
    r = c.call(kwire.PRODUCE, version, body)
    fields = lambda r: (r.i32(), r.i16(), r.i64()) + ((r.i64(),) if version >= 2 else ())
    ((name, (part,)),) = r.array(lambda r: (r.string(), r.array(fields)))
    if version >= 1:
        r.i32()  # throttle
    assert name == topic
    return part


@pytest.mark.parametrize("version", [0, 1, 2])
def test_malformed_old_message_sets_are_corrupt_message_and_nothing_is_written(broker, version):
    topic = f"bad-set-v{version}"
    magic = 1 if version == 2 else 0
    with Conn(broker.bootstrap) as c:
        assert c.create_topic(topic, 1) == kwire.NONE
        good = message(b"good", magic=magic)
        part = produce_old(c, topic, good, version)
        assert part[:3] == (0, kwire.NONE, 0)
        bad_crc = bytearray(message(b"evil", magic=magic))
        bad_crc[-1] ^= 1
        truncated = message(b"cut short", magic=magic)[:-3]
        size_lie = bytearray(message(b"liar", magic=magic))
        size_lie[8:12] = struct.pack(">i", 1 << 30)
        import gzip
        bad_gzip = message(b"\x1f\x8b not really gzip", magic=magic, attributes=1)
        inner_ok_outer_bad = bytearray(message(gzip.compress(message(b"inner", magic=magic)),
                                               magic=magic, attributes=1))
        inner_ok_outer_bad[20] ^= 0xFF
        for bad in (bytes(bad_crc), truncated, bytes(size_lie), bad_gzip,
                    bytes(inner_ok_outer_bad), good + bytes(bad_crc)):
            part = produce_old(c, topic, bad, version)
            assert part[1] == kwire.CORRUPT_MESSAGE, part
            assert part[2] == -1
        # A v2 batch in an old Produce is INVALID_RECORD, as Kafka answered.
        part = produce_old(c, topic, kwire.record_batch([b"v2 in v0"]), version)
        assert part[1] == kwire.INVALID_RECORD
        # The connection is kept and the log holds the one good message.
        part = produce_old(c, topic, message(b"after", magic=magic), version)
        assert part[:3] == (0, kwire.NONE, 1)
    assert stored(broker, topic) == [b"good", b"after"]


def test_old_produce_with_acks_0_writes_without_a_reply(broker):
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("acks0-v1", 1) == kwire.NONE
        body = struct.pack(">hi", 0, 10000) + struct.pack(">i", 1) + kwire.kstring("acks0-v1")
        body += struct.pack(">ii", 1, 0) + kwire.kbytes(message(b"fire", magic=0))
        c.send_request(kwire.PRODUCE, 1, body)  # no reply comes for acks=0
        # The next reply on the connection is the next request's.
        part = produce_old(c, "acks0-v1", message(b"and forget", magic=0), 1)
        assert part[:3] == (0, kwire.NONE, 1)
    assert stored(broker, "acks0-v1") == [b"fire", b"and forget"]


def test_old_fetch_of_a_missing_partition_and_old_list_offsets(broker):
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("lo-v0", 1) == kwire.NONE
        for i in range(3):
            assert produce_old(c, "lo-v0", message(b"m%d" % i, magic=0), 0)[1] == kwire.NONE
        # ListOffsets v0: latest (-1) and earliest (-2), old-style offset arrays.
        for ts, want in ((-1, [3]), (-2, [0])):
            body = struct.pack(">i", -1) + struct.pack(">i", 1) + kwire.kstring("lo-v0")
            body += struct.pack(">iiqi", 1, 0, ts, 1)
            r = c.call(kwire.LIST_OFFSETS, 0, body)
            ((_, ((p, err, offsets),)),) = r.array(lambda r: (r.string(), r.array(
                lambda r: (r.i32(), r.i16(), r.array(lambda r: r.i64())))))
            assert (p, err, offsets) == (0, kwire.NONE, want)
        # Fetch v0 of a partition that does not exist: its error, an empty set.
        body = struct.pack(">iii", -1, 0, 0) + struct.pack(">i", 1) + kwire.kstring("lo-v0")
        body += struct.pack(">i", 2) + struct.pack(">iqi", 0, 1, 1 << 20)
        body += struct.pack(">iqi", 7, 0, 1 << 20)
        r = c.call(kwire.FETCH, 0, body)
        ((_, parts),) = r.array(lambda r: (r.string(), r.array(
            lambda r: (r.i32(), r.i16(), r.i64(), r.bytes_()))))
        assert [(p, e, hw) for p, e, hw, _ in parts] == \
            [(0, kwire.NONE, 3), (7, kwire.UNKNOWN_TOPIC_OR_PARTITION, -1)]
        data = parts[0][3]
        offsets = []
        pos = 0
        while pos + 12 <= len(data):
            off, size = struct.unpack_from(">qi", data, pos)
            assert data[pos + 16] == 0, "Fetch v0 must get magic 0"
            offsets.append(off)
            pos += 12 + size
        assert offsets == [1, 2]


# --- one release level: Kafka 4.1 ------------------------------------------------------------

RECORDED = HERE.parents[1] / "crates" / "strom-kafka" / "src" / "kafka-4.1-api-versions.txt"
# Served below 4.1's minimum (KIP-896's removed versions) and above its maximum (4.2's share).
LEGACY_MIN = {0: 0, 1: 0, 2: 0, 8: 0, 9: 0, 19: 0, 20: 0, 32: 0}
AHEAD = {78: 2, 79: 2}


def test_advertised_ranges_are_kafka_4_1s_and_kafka_python_infers_4_1(broker):
    from kafka.admin import KafkaAdminClient

    recorded = {}
    for line in RECORDED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _name, lo, hi = line.split()
            recorded[int(key)] = (int(lo), int(hi))
    with Conn(broker.bootstrap) as c:
        err, advertised = c.api_versions(2)
    assert err == kwire.NONE
    for key, (lo, hi) in advertised.items():
        assert key in recorded, f"api {key} is not a Kafka 4.1 broker API"
        lo41, hi41 = recorded[key]
        assert hi == AHEAD.get(key, hi41), f"api {key}: max {hi}, Kafka 4.1 {hi41}"
        assert lo == LEGACY_MIN.get(key, lo41), f"api {key}: min {lo}, Kafka 4.1 {lo41}"
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert str(a._manager.broker_version_data) == "<BrokerVersionData 4.1>"
        # DescribeGroups v6 (KIP-1043): an unknown group is GROUP_ID_NOT_FOUND.
        d = a.describe_groups(["no-such-group"])["no-such-group"]
        assert d["error"] is not None and "GroupIdNotFound" in d["error"], d
    finally:
        a.close()
