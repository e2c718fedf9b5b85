"""Captures a seed corpus of real Kafka client requests for Strom's fuzz targets and e2e tests.

A TCP proxy on a free 127.0.0.1 port sits in front of a real `strom serve` (started here over a
temp dir with `--advertised-addr` set to the proxy, so that clients keep talking through it).
The client->broker byte stream of every connection is split into request frames by their
4-byte length prefix. Real clients are then driven through the proxy one after another: kcat
(Debian's librdkafka 2.0, also with the 0.9 / 0.10 fallbacks that send Produce v0-2 and Fetch
v0-3), confluent-kafka (its ShareConsumer too), kafka-python, kafkajs and sarama
(fuzz/capture/sarama/main.go).

What is written, under OUT (fuzz/corpus by default; each directory is emptied first):

kafka_request/<client>-<api>-v<version>-<sha256 10 hex>.bin
    one request frame WITHOUT its length prefix (api key, api version, correlation id, client
    id, ...); deduplicated by content, at most `FRAMES_PER_KIND_MAX` frames per (client, api,
    version) that differ in more than their correlation id; frames over `FRAME_BYTES_MAX` are
    skipped.
legacy_request/<client>-<api>-v<version>-<sha>.bin
    the same for Produce v0-2 and Fetch v0-3 (old message-set versions).
record_batch/<client>-<codec>-<sha>.bin
    every v2 record batch found in the records field of a captured Produce request.
log_recovery/<topic>-<segment>-<sha>.bin
    the first 1-5 batches of each `.log` segment in the broker's data dir after the run.

The connection's label (which client) is taken when the proxy accepts it, so connections that
a previous client leaves open keep their own label.

Usage: python capture.py --strom target/debug/strom [--out fuzz/corpus] [--only kcat,...]
"""

import argparse
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Frames bigger than this are not kept (the corpus must stay small; produce messages are small).
FRAME_BYTES_MAX = 64 * 1024
# Distinct frames kept per (client, api, version), correlation id aside: consumers send the same
# Fetch hundreds of times.
FRAMES_PER_KIND_MAX = 6
# Produce frames differ by codec, key and headers: more are worth keeping.
PRODUCE_FRAMES_PER_KIND_MAX = 16
# Segment files copied for log_recovery: their first batches, at most this many and this big.
SEGMENT_BYTES_MAX = 64 * 1024
SEGMENT_BATCHES_MAX = 5
# Bound on each client step (a subprocess or a library call that waits for the broker).
STEP_TIMEOUT_S = 60

API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 4: "LeaderAndIsr", 5: "StopReplica",
    6: "UpdateMetadata", 7: "ControlledShutdown", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 17: "SaslHandshake", 18: "ApiVersions",
    19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 22: "InitProducerId",
    23: "OffsetForLeaderEpoch", 24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn",
    27: "WriteTxnMarkers", 28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls",
    31: "DeleteAcls", 32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments", 47: "OffsetDelete", 48: "DescribeClientQuotas",
    49: "AlterClientQuotas", 50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials",
    55: "DescribeQuorum", 57: "UpdateFeatures", 60: "DescribeCluster", 61: "DescribeProducers",
    64: "UnregisterBroker", 65: "DescribeTransactions", 66: "ListTransactions",
    68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe", 71: "GetTelemetrySubscriptions",
    72: "PushTelemetry", 74: "ListClientMetricsResources", 75: "DescribeTopicPartitions",
    76: "ShareGroupHeartbeat", 77: "ShareGroupDescribe", 78: "ShareFetch", 79: "ShareAcknowledge",
    90: "DescribeShareGroupOffsets", 91: "AlterShareGroupOffsets", 92: "DeleteShareGroupOffsets",
}
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
PRODUCE, FETCH = 0, 1
# First flexible (compact, tagged) version of Produce.
PRODUCE_FLEXIBLE_MIN = 9


def log(msg):
    print(f"capture: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_legacy(api, version) -> bool:
    return (api == PRODUCE and version <= 2) or (api == FETCH and version <= 3)


# --- the proxy --------------------------------------------------------------------------------

class Recorder:
    """Collects request frames by client label, deduplicated."""

    def __init__(self):
        self.lock = threading.Lock()
        self.frames = []  # (label, frame) in arrival order
        self.seen = set()
        self.kinds = {}  # (label, api, version) -> set of normalised frames
        self.skipped_big = 0

    def add(self, label, frame: bytes):
        if len(frame) < 8:
            return
        if len(frame) > FRAME_BYTES_MAX:
            self.skipped_big += 1
            return
        api, version = struct.unpack_from(">hh", frame)
        normalised = frame[:4] + b"\0\0\0\0" + frame[8:]
        cap = PRODUCE_FRAMES_PER_KIND_MAX if api == PRODUCE else FRAMES_PER_KIND_MAX
        with self.lock:
            if frame in self.seen:
                return
            kind = self.kinds.setdefault((label, api, version), set())
            if normalised in kind or len(kind) >= cap:
                return
            kind.add(normalised)
            self.seen.add(frame)
            self.frames.append((label, frame))


class Proxy:
    """Forwards 127.0.0.1:port to the broker; records the client->broker frames."""

    def __init__(self, upstream_port: int, recorder: Recorder):
        self.upstream = ("127.0.0.1", upstream_port)
        self.recorder = recorder
        self.label = "unlabelled"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self.conns += [client, server]
            label = self.label
            threading.Thread(target=self._up, args=(client, server, label), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client, server, label):
        buf = bytearray()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                server.sendall(data)
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack_from(">i", buf)
                    if n < 0 or len(buf) < 4 + n:
                        break
                    self.recorder.add(label, bytes(buf[4:4 + n]))
                    del buf[:4 + n]
        except OSError:
            pass
        finally:
            for s in (server, client):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _down(self, server, client):
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closing = True
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


# --- the broker -------------------------------------------------------------------------------

class Broker:
    def __init__(self, strom: str, proxy_port: int, kafka_port: int):
        self.data_dir = Path(tempfile.mkdtemp(prefix="strom-capture-"))
        self.port = kafka_port
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".log")
        self.log_file = open(self.log_path, "wb")
        cmd = [os.path.abspath(strom), "serve", "--data-dir", str(self.data_dir),
               "--kafka-addr", f"127.0.0.1:{kafka_port}",
               "--advertised-addr", f"127.0.0.1:{proxy_port}",
               "--http-addr", "off",
               "--group-initial-rebalance-delay-ms", "100",
               "--num-partitions", "1"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, cwd=self.data_dir)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"strom exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", kafka_port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise SystemExit(f"strom did not start; log: {self.log_path}")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()

    def cleanup(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


# --- the clients ------------------------------------------------------------------------------

def run(cmd, stdin=None, timeout=STEP_TIMEOUT_S, env=None, cwd=None):
    """Runs a client command; a failure or a time-out is logged, not fatal."""
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, env=env, cwd=cwd)
        if p.returncode != 0:
            log(f"{' '.join(map(str, cmd))[:120]}: exit {p.returncode}: "
                f"{p.stderr.decode(errors='replace')[-300:]}")
        return p
    except subprocess.TimeoutExpired:
        log(f"{' '.join(map(str, cmd))[:120]}: timed out after {timeout}s")
        return None


def step(name, f):
    try:
        f()
    except Exception as e:  # a client refusing or a broker not implementing a call: go on
        log(f"{name}: {type(e).__name__}: {e}"[:300])


def small_messages(tag, n=8):
    # Repetitive values, so that every codec really compresses (librdkafka sends a batch
    # uncompressed when compression would not make it smaller).
    return [f"{tag} message {i} ".encode() * 6 for i in range(n)]


def drive_kcat(bootstrap):
    kcat = shutil.which("kcat")
    if not kcat:
        log("kcat not found: skipped")
        return
    b = ["-b", bootstrap]
    fast = ["-X", "topic.metadata.refresh.interval.ms=1000"]
    run([kcat, *b, "-L"])
    run([kcat, *b, "-L", "-t", "kcat-none"])
    for codec in CODECS.values():
        topic = f"kcat-{codec}"
        data = b"\n".join(small_messages(f"kcat {codec}")) + b"\n"
        run([kcat, *b, "-P", "-t", topic, "-z", codec, "-X", "linger.ms=50"], stdin=data)
        # Keys and headers, acks=1.
        keyed = b"\n".join(b"k%d:%s" % (i, m) for i, m in enumerate(small_messages(f"kcat keyed {codec}", 3)))
        run([kcat, *b, "-P", "-t", topic, "-z", codec, "-K", ":", "-H", "h1=v1", "-H", "h2=",
             "-X", "request.required.acks=1"], stdin=keyed + b"\n")
    # A few small batches in one topic for log_recovery, one kcat run each.
    for i in range(3):
        run([kcat, *b, "-P", "-t", "kcat-multi", "-z", ["none", "lz4", "zstd"][i]],
            stdin=b"\n".join(small_messages(f"multi {i}", 2)) + b"\n")
    run([kcat, *b, "-C", "-t", "kcat-none", "-o", "beginning", "-e", *fast])
    run([kcat, *b, "-C", "-t", "kcat-gzip", "-p", "0", "-o", "-3", "-e", "-f", "%k %s %h\n"])
    run([kcat, *b, "-C", "-t", "kcat-zstd", "-o", "1", "-c", "2", "-X", "fetch.wait.max.ms=10"])
    run([kcat, *b, "-Q", "-t", f"kcat-none:0:{int(time.time() * 1000) - 60000}"])
    run([kcat, *b, "-Q", "-t", "kcat-none:0:-1"])
    # Balanced consumer group with commits (auto commit, and the commit at close).
    run([kcat, *b, "-G", "kcat-group", "kcat-none", "kcat-lz4", "-o", "beginning", "-e",
         "-X", "auto.commit.interval.ms=100", "-X", "session.timeout.ms=6000",
         "-X", "heartbeat.interval.ms=500"], timeout=30)
    run([kcat, *b, "-G", "kcat-group", "kcat-none", "-e", "-X", "enable.auto.commit=false",
         "-X", "session.timeout.ms=6000"], timeout=30)


def drive_kcat_legacy(bootstrap):
    """librdkafka without ApiVersions: Metadata v0, Produce v0-2 (message sets), Fetch v0-3."""
    kcat = shutil.which("kcat")
    if not kcat:
        return
    # From 0.10.0 on librdkafka asks ApiVersions whatever api.version.request says: sarama and
    # kafka-python send the 0.10 versions (Produce v2, Fetch v2-3).
    for fallback in ("0.8.2", "0.9.0"):
        legacy = ["-b", bootstrap, "-X", "api.version.request=false",
                  "-X", f"broker.version.fallback={fallback}"]
        codecs = ["none", "gzip", "snappy"] + (["lz4"] if fallback == "0.9.0" else [])
        for codec in codecs:
            data = b"\n".join(small_messages(f"legacy {fallback} {codec}", 4)) + b"\n"
            # Old versions are answered UNSUPPORTED_VERSION: don't retry for long.
            run([kcat, *legacy, "-P", "-t", "kcat-none", "-z", codec, "-K", ":",
                 "-X", "message.timeout.ms=2000", "-X", "retries=0"], stdin=b"k:" + data, timeout=15)
        # An absolute offset: "beginning" would send ListOffsets v0, which Strom does not serve.
        run([kcat, *legacy, "-C", "-t", "kcat-none", "-p", "0", "-o", "0", "-c", "1"], timeout=5)
        run([kcat, *legacy, "-L"], timeout=10)


def drive_confluent(bootstrap):
    try:
        import confluent_kafka as ck
        from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                           ConfigResource, NewPartitions, NewTopic, OffsetSpec)
    except ImportError as e:
        log(f"confluent-kafka not importable ({e}): skipped")
        return
    base = {"bootstrap.servers": bootstrap, "client.id": "confluent-capture"}
    admin = AdminClient(base)

    def wait(futures):
        for f in futures.values():
            try:
                f.result(timeout=20)
            except Exception as e:
                log(f"confluent admin: {e}"[:200])

    topic = "confluent-data"
    step("create topics", lambda: wait(admin.create_topics(
        [NewTopic(topic, 2, 1), NewTopic("confluent-tmp", 1, 1, config={"retention.ms": "3600000"})])))
    step("create topics validate", lambda: wait(admin.create_topics(
        [NewTopic("confluent-validate", 1, 1)], validate_only=True)))
    step("create partitions", lambda: wait(admin.create_partitions([NewPartitions(topic, 3)])))
    step("describe configs", lambda: wait(admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, topic), ConfigResource(ConfigResource.Type.BROKER, "1")])))
    step("incremental alter configs", lambda: wait(admin.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE)])])))
    step("describe cluster", lambda: admin.describe_cluster().result(timeout=20))
    step("describe topics", lambda: wait(admin.describe_topics(ck.TopicCollection([topic]))))
    step("list topics", lambda: admin.list_topics(timeout=10))

    for codec in CODECS.values():
        def produce(codec=codec):
            p = ck.Producer({**base, "enable.idempotence": True, "compression.type": codec,
                             "linger.ms": 20})
            for i, m in enumerate(small_messages(f"confluent {codec}")):
                p.produce(topic, m, key=f"k{i}".encode(), headers=[("h", str(i).encode())],
                          partition=i % 2)
            assert p.flush(20) == 0, "unflushed"
        step(f"produce {codec}", produce)

    def plain_acks1():
        p = ck.Producer({**base, "acks": 1, "enable.idempotence": False})
        p.produce("confluent-tmp", b"tombstone-key-only", key=b"k")
        p.produce("confluent-tmp", None, key=b"tombstone")
        p.flush(20)
    step("produce acks=1", plain_acks1)

    def group():
        c = ck.Consumer({**base, "group.id": "confluent-group", "auto.offset.reset": "earliest",
                         "group.instance.id": "confluent-static-1",
                         "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100})
        c.subscribe([topic])
        got, deadline = 0, time.monotonic() + 20
        while got < 10 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
                c.commit(message=m, asynchronous=False)
        c.committed([ck.TopicPartition(topic, 0)], timeout=10)
        c.position([ck.TopicPartition(topic, 0)])
        c.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=10)
        c.offsets_for_times([ck.TopicPartition(topic, 0, int(time.time() * 1000) - 60000)], timeout=10)
        c.close()
    step("consumer group", group)

    def kip848_group():
        # A KIP-848 member (group.protocol=consumer): ConsumerGroupHeartbeat join / steady /
        # leave, OffsetCommit and OffsetFetch with its member epoch, then a regex subscription.
        for sub in ([topic], ["^confluent-d.*"]):
            c = ck.Consumer({**base, "group.id": "confluent-kip848", "group.protocol": "consumer",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
            c.subscribe(sub)
            got, deadline = 0, time.monotonic() + 20
            while got < 4 and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    got += 1
                    c.commit(message=m, asynchronous=False)
            c.close()
    step("kip848 consumer group", kip848_group)

    def assign():
        c = ck.Consumer({**base, "group.id": "confluent-assign", "enable.auto.commit": True,
                         "auto.commit.interval.ms": 100, "isolation.level": "read_uncommitted"})
        c.assign([ck.TopicPartition(topic, 1, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and c.poll(0.3) is None:
            pass
        time.sleep(0.3)
        c.close()
    step("assigned consumer", assign)

    def share():
        # A share group (KIP-932): its configs on the GROUP resource, then a ShareConsumer
        # accepting, releasing and rejecting (ShareGroupHeartbeat, ShareFetch with
        # piggy-backed acks, ShareAcknowledge, the closing epoch -1).
        res = ConfigResource("GROUP", "confluent-share", incremental_configs=[ConfigEntry(
            "share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
        wait(admin.incremental_alter_configs([res]))
        wait(admin.describe_configs([ConfigResource("GROUP", "confluent-share")]))
        c = ck.ShareConsumer({**base, "group.id": "confluent-share",
                              "share.acknowledgement.mode": "explicit", "max.poll.records": 3})
        c.subscribe([topic])
        kinds = [ck.AcknowledgeType.ACCEPT, ck.AcknowledgeType.RELEASE, ck.AcknowledgeType.REJECT]
        n, deadline = 0, time.time() + 20
        while time.time() < deadline and n < 12:
            for m in c.poll(1.0):
                if m.error() is None:
                    c.acknowledge(m, kinds[n % 3])
                    n += 1
            c.commit_sync(10)
        c.close()
    step("share consumer", share)

    step("list groups", lambda: admin.list_consumer_groups().result(timeout=20))
    step("describe groups", lambda: wait(admin.describe_consumer_groups(["confluent-group", "confluent-kip848"])))
    step("list group offsets", lambda: wait(admin.list_consumer_group_offsets(
        [ck.ConsumerGroupTopicPartitions("confluent-group")])))
    step("alter group offsets", lambda: wait(admin.alter_consumer_group_offsets(
        [ck.ConsumerGroupTopicPartitions("confluent-assign", [ck.TopicPartition(topic, 1, 0)])])))
    step("list offsets", lambda: wait(admin.list_offsets({
        ck.TopicPartition(topic, 0): OffsetSpec.latest(),
        ck.TopicPartition(topic, 1): OffsetSpec.earliest(),
        ck.TopicPartition(topic, 2): OffsetSpec.for_timestamp(int(time.time() * 1000) - 60000)})))
    step("delete groups", lambda: wait(admin.delete_consumer_groups(["confluent-assign"])))
    step("delete topics", lambda: wait(admin.delete_topics(["confluent-tmp"])))


def drive_kafka_python(bootstrap):
    try:
        import kafka
        from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    except ImportError as e:
        log(f"kafka-python not importable ({e}): skipped")
        return
    topic = "kpy-data"
    common = {"bootstrap_servers": bootstrap, "client_id": "kafka-python-capture",
              "request_timeout_ms": 15000}
    admin = KafkaAdminClient(**common)
    step("create topics", lambda: admin.create_topics(
        {topic: {"num_partitions": 2}, "kpy-tmp": {"num_partitions": 1, "configs": {"retention.ms": "3600000"}}}))
    step("create topics validate", lambda: admin.create_topics({"kpy-validate": {}}, validate_only=True))
    step("create partitions", lambda: admin.create_partitions({topic: 3}))
    step("list topics", admin.list_topics)
    step("describe topics", lambda: admin.describe_topics([topic]))
    step("describe cluster", admin.describe_cluster)
    step("describe configs", lambda: admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic), ConfigResource(ConfigResourceType.BROKER, "1")]))
    step("alter configs", lambda: admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": "7200000"})]))

    codecs = [None, "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        def produce(codec=codec):
            p = kafka.KafkaProducer(**common, compression_type=codec, linger_ms=20, acks="all")
            for i, m in enumerate(small_messages(f"kafka-python {codec}")):
                p.send(topic, m, key=f"k{i}".encode(), headers=[("h", str(i).encode())], partition=i % 2)
            p.flush(20)
            p.close(5)
        step(f"produce {codec}", produce)
    # Older protocol versions, as kafka-python speaks them to older brokers.
    for api_version in ((0, 10, 0), (0, 10, 1), (0, 11), (1, 0), (2, 1)):
        def produce_old(api_version=api_version):
            p = kafka.KafkaProducer(**common, api_version=api_version, acks=1,
                                    enable_idempotence=False, compression_type="gzip")
            for m in small_messages(f"kafka-python api {api_version}", 3):
                p.send(topic, m, partition=0)
            p.flush(20)
            p.close(5)
        step(f"produce api_version {api_version}", produce_old)

    for api_version in ((0, 10, 0), (0, 10, 1), (0, 11)):
        def consume_old(api_version=api_version):
            c = kafka.KafkaConsumer(**common, api_version=api_version, consumer_timeout_ms=2000,
                                    fetch_max_wait_ms=100)
            tp = kafka.TopicPartition(topic, 0)
            c.assign([tp])
            c.seek(tp, 0)
            for i, _ in enumerate(c):
                if i >= 2:
                    break
            c.close()
        step(f"consume api_version {api_version}", consume_old)

    def group():
        c = kafka.KafkaConsumer(topic, **common, group_id="kpy-group", auto_offset_reset="earliest",
                                enable_auto_commit=False, consumer_timeout_ms=5000,
                                session_timeout_ms=6000, heartbeat_interval_ms=500,
                                fetch_max_wait_ms=100)
        for i, m in enumerate(c):
            if i % 4 == 0:
                c.commit()
            if i == 8:
                time.sleep(1.2)  # a heartbeat or two
            if i >= 12:
                break
        c.commit()
        tp = kafka.TopicPartition(topic, 0)
        c.committed(tp)
        c.end_offsets([tp])
        c.beginning_offsets([tp])
        c.offsets_for_times({tp: int(time.time() * 1000) - 60000})
        c.close()
    step("consumer group", group)

    def assigned():
        c = kafka.KafkaConsumer(**common, group_id="kpy-assign", enable_auto_commit=True,
                                auto_commit_interval_ms=100, consumer_timeout_ms=3000)
        c.assign([kafka.TopicPartition(topic, 1)])
        c.seek_to_beginning()
        for _ in c:
            pass
        c.close()
    step("assigned consumer", assigned)

    step("list groups", admin.list_groups)
    step("describe groups", lambda: admin.describe_groups(["kpy-group"]))
    step("list group offsets", lambda: admin.list_group_offsets({"kpy-group": None}))
    step("alter group offsets", lambda: admin.alter_group_offsets(
        "kpy-assign", {kafka.TopicPartition(topic, 1): kafka.OffsetAndMetadata(1, "meta", -1)}))
    step("delete group offsets", lambda: admin.delete_group_offsets(
        "kpy-assign", [kafka.TopicPartition(topic, 1)]))
    step("list partition offsets", lambda: admin.list_partition_offsets(
        {kafka.TopicPartition(topic, 0): -1, kafka.TopicPartition(topic, 1): -2,
         kafka.TopicPartition(topic, 2): int(time.time() * 1000) - 60000}))
    step("delete groups", lambda: admin.delete_groups(["kpy-assign"]))
    step("delete topics", lambda: admin.delete_topics(["kpy-tmp"]))
    step("close admin", admin.close)


def drive_kafkajs(bootstrap):
    node = shutil.which("node")
    modules = [ROOT / "tests/e2e/js/node_modules", Path("/work/main/tests/e2e/js/node_modules")]
    modules = [m for m in modules if (m / "kafkajs").is_dir()]
    if not node or not modules:
        log("node or tests/e2e/js/node_modules/kafkajs not found (run scripts/setup): kafkajs skipped")
        return
    env = dict(os.environ, NODE_PATH=str(modules[0]))
    p = run([node, str(HERE / "kafkajs_driver.js"), bootstrap, "kafkajs"], env=env, timeout=240)
    if p is not None:
        sys.stderr.write(p.stderr.decode(errors="replace"))


def drive_sarama(bootstrap, build_dir: Path):
    go = shutil.which("go")
    gopath = Path("/usr/share/gocode")
    if not go or not (gopath / "src/github.com/Shopify/sarama").is_dir():
        log("go or Debian's golang-github-shopify-sarama-dev not found: sarama skipped")
        return
    exe = build_dir / "sarama-driver"
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(gopath), GOCACHE=str(build_dir / "gocache"),
               GOFLAGS="")
    p = run([go, "build", "-o", str(exe), "."], env=env, cwd=HERE / "sarama", timeout=300)
    if p is None or p.returncode != 0:
        return
    # 0.10.2 speaks message-set Produce v2 and Fetch v3; 2.1.0 record batches and zstd.
    for version in ("0.10.2.0", "1.0.0", "2.1.0"):
        prefix = "sarama-" + version.replace(".", "")
        p = run([str(exe), "-brokers", bootstrap, "-version", version, "-prefix", prefix], timeout=300)
        if p is not None:
            sys.stderr.write(p.stderr.decode(errors="replace"))


# --- the corpus -------------------------------------------------------------------------------

def sha10(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:10]


class Buf:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = v = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n)

    def compact(self):
        n = self.uvarint() - 1
        return None if n < 0 else self.take(n)

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def produce_records(frame: bytes):
    """The records fields of a Produce request frame (any version)."""
    b = Buf(frame)
    _api, version, _corr = b.i16(), b.i16(), b.i32()
    b.string()  # client id (always a classic nullable string)
    flexible = version >= PRODUCE_FLEXIBLE_MIN
    if flexible:
        b.tags()
    if version >= 3:
        b.compact() if flexible else b.string()  # transactional id
    b.i16()  # acks
    b.i32()  # timeout
    out = []
    topics = b.uvarint() - 1 if flexible else b.i32()
    for _ in range(topics):
        if version >= 13:
            b.take(16)  # topic id
        else:
            b.compact() if flexible else b.string()
        parts = b.uvarint() - 1 if flexible else b.i32()
        for _ in range(parts):
            b.i32()
            if flexible:
                records = b.compact()
                b.tags()
            else:
                n = b.i32()
                records = None if n < 0 else b.take(n)
            if records:
                out.append(records)
        if flexible:
            b.tags()
    return out


def split_batches(records: bytes):
    """Whole v2 record batches in a records field (message sets, magic 0/1, are not batches)."""
    pos = 0
    while pos + 61 <= len(records):
        (length,) = struct.unpack_from(">i", records, pos + 8)
        end = pos + 12 + length
        if length < 49 or end > len(records) or records[pos + 16] != 2:
            return
        yield records[pos:end]
        pos = end


def write_corpus(recorder: Recorder, data_dir: Path, out: Path):
    dirs = {name: out / name for name in ("kafka_request", "legacy_request", "record_batch", "log_recovery")}
    for d in dirs.values():
        if d.exists():
            for f in d.glob("*.bin"):
                f.unlink()
        d.mkdir(parents=True, exist_ok=True)
    counts = {name: 0 for name in dirs}
    batches_seen = set()
    for label, frame in recorder.frames:
        api, version = struct.unpack_from(">hh", frame)
        name = f"{label}-{API_NAMES.get(api, f'api{api}')}-v{version}-{sha10(frame)}.bin"
        target = dirs["legacy_request"] if is_legacy(api, version) else dirs["kafka_request"]
        (target / name).write_bytes(frame)
        counts[target.name] += 1
        if api == PRODUCE and version >= 3:
            try:
                fields = produce_records(frame)
            except ValueError:
                log(f"could not parse {name}")
                continue
            for records in fields:
                for batch in split_batches(records):
                    if batch in batches_seen:
                        continue
                    batches_seen.add(batch)
                    codec = CODECS.get(struct.unpack_from(">h", batch, 21)[0] & 7, "codec")
                    (dirs["record_batch"] / f"{label}-{codec}-{sha10(batch)}.bin").write_bytes(batch)
                    counts["record_batch"] += 1
    # Segments the broker wrote (topics and the groups' internal log), cut after their first
    # SEGMENT_BATCHES_MAX batches (what the file held at that moment).
    for seg in sorted(data_dir.rglob("*.log")):
        data = seg.read_bytes()
        batches = list(split_batches(data))[:SEGMENT_BATCHES_MAX]
        data = b"".join(batches)
        if not batches or len(data) > SEGMENT_BYTES_MAX:
            continue
        part = seg.parent.name.lstrip(".")
        name = f"{part}-{seg.stem[-6:]}-{len(batches)}b-{sha10(data)}.bin"
        (dirs["log_recovery"] / name).write_bytes(data)
        counts["log_recovery"] += 1
    return counts


DRIVERS = {
    "kcat": lambda bs, tmp: drive_kcat(bs),
    "kcat-legacy": lambda bs, tmp: drive_kcat_legacy(bs),
    "confluent": lambda bs, tmp: drive_confluent(bs),
    "kafka-python": lambda bs, tmp: drive_kafka_python(bs),
    "kafkajs": lambda bs, tmp: drive_kafkajs(bs),
    "sarama": lambda bs, tmp: drive_sarama(bs, tmp),
}
# The file-name prefix of each driver's frames (the legacy kcat runs are kcat's too).
LABELS = {"kcat-legacy": "kcat"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strom", default=str(ROOT / "target/debug/strom"))
    ap.add_argument("--out", default=str(ROOT / "fuzz/corpus"))
    ap.add_argument("--only", default=",".join(DRIVERS), help="comma-separated drivers")
    args = ap.parse_args()
    recorder = Recorder()
    kafka_port = free_port()
    proxy = Proxy(kafka_port, recorder)
    broker = Broker(args.strom, proxy.port, kafka_port)
    bootstrap = f"127.0.0.1:{proxy.port}"
    log(f"broker on 127.0.0.1:{kafka_port}, proxy on {bootstrap}, data {broker.data_dir}")
    work = Path(tempfile.mkdtemp(prefix="strom-capture-build-"))
    try:
        for name in args.only.split(","):
            proxy.label = LABELS.get(name, name)
            started = time.monotonic()
            before = len(recorder.frames)
            log(f"--- {name}")
            DRIVERS[name](bootstrap, work)
            time.sleep(0.5)  # let the last frames of its connections arrive
            log(f"--- {name}: {len(recorder.frames) - before} frames in {time.monotonic() - started:.1f}s")
        alive = broker.proc.poll() is None
        broker.stop()
        if not alive:
            raise SystemExit(f"the broker died during the capture; log: {broker.log_path}")
        counts = write_corpus(recorder, broker.data_dir, Path(args.out))
        log(f"wrote {counts} under {args.out} ({recorder.skipped_big} frames over "
            f"{FRAME_BYTES_MAX} bytes skipped)")
    finally:
        proxy.close()
        if broker.proc.poll() is None:
            broker.stop()
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
