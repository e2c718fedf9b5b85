"""Share groups (KIP-932) on the Kafka door, driven by confluent-kafka's ShareConsumer
(librdkafka 2.16) and, where no client sends it, by raw frames (kwire).

A share group hands each record of a partition to one member at a time: the member acquires
it for a lock, then ACCEPTs, RELEASEs (redelivered, delivery count + 1) or REJECTs it.
"""

import json
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import (AcknowledgeType, Consumer, KafkaError, KafkaException, Producer,
                             ShareConsumer, TopicCollection)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

import kwire
from kwire import Conn, NO_TAGS, compact_array_count, compact_string, uvarint

pytestmark = pytest.mark.timeout(240)

SHARE_GROUP_HEARTBEAT, SHARE_GROUP_DESCRIBE, SHARE_FETCH, SHARE_ACKNOWLEDGE = 76, 77, 78, 79
DESCRIBE_SHARE_GROUP_OFFSETS, ALTER_SHARE_GROUP_OFFSETS, DELETE_SHARE_GROUP_OFFSETS = 90, 91, 92
LIST_GROUPS, DESCRIBE_GROUPS, FIND_COORDINATOR = 16, 15, 10
INVALID_REQUEST = 42
INVALID_CONFIG = 40
SHARE_SESSION_NOT_FOUND = 122
INVALID_SHARE_SESSION_EPOCH = 123
INVALID_RECORD_STATE = 121
GROUP_ID_NOT_FOUND = 69
ACCEPT, RELEASE, REJECT, RENEW = 1, 2, 3, 4


# --- helpers -------------------------------------------------------------------------------

def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker, name, partitions=1):
    a = admin(broker)
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(20)


def topic_id(broker, name) -> bytes:
    a = admin(broker)
    d = a.describe_topics(TopicCollection([name]))[name].result(20)
    u = d.topic_id
    return struct.pack(">qq", u.get_most_significant_bits(), u.get_least_significant_bits())


def produce(broker, topic, n, prefix="m", partition=0):
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, value=f"{prefix}{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def set_group_configs(broker, group, **configs):
    """IncrementalAlterConfigs on the GROUP resource (type 32) through the admin client."""
    res = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(k.replace("_", "."), str(v), incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    a = admin(broker)
    for f in a.incremental_alter_configs([res]).values():
        f.result(20)


def share_consumer(broker, group, topic, **conf):
    c = ShareConsumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                       **{k.replace("_", "."): v for k, v in conf.items()}})
    c.subscribe([topic])
    return c


def poll_records(c, timeout=1.0):
    out = []
    for m in c.poll(timeout):
        if m.error() is None:
            out.append(m)
    return out


# --- raw frames ------------------------------------------------------------------------------

def i32(v):
    return struct.pack(">i", v)


def carray(items):
    return compact_array_count(len(items)) + b"".join(items)


def heartbeat(conn, group, member, epoch, topics=None):
    body = (compact_string(group) + compact_string(member) + i32(epoch) + compact_string(None)
            + (uvarint(0) if topics is None else carray([compact_string(t) for t in topics]))
            + NO_TAGS)
    r = conn.call_flexible(SHARE_GROUP_HEARTBEAT, 1, body)
    r.i32()
    err, msg = r.i16(), r.cstring()
    member_id, member_epoch, interval = r.cstring(), r.i32(), r.i32()
    return {"error": err, "message": msg, "member_id": member_id, "epoch": member_epoch,
            "interval": interval}


def ack_batches(batches):
    """[(first, last, [types])] -> the AcknowledgementBatches array."""
    return carray([struct.pack(">qq", f, l) + carray([struct.pack(">b", t) for t in types]) + NO_TAGS
                   for f, l, types in batches])


def share_fetch(conn, group, member, epoch, tid, partitions=(0,), acks=None, max_records=100,
                max_wait_ms=500, version=1, forget=()):
    """ShareFetch; `acks` = {partition: [(first, last, [types])]}. Returns the parsed answer."""
    acks = acks or {}
    parts = [struct.pack(">i", p) + ack_batches(acks.get(p, [])) + NO_TAGS
             for p in sorted(set(partitions) | set(acks))]
    topics = [tid + carray(parts) + NO_TAGS] if parts else []
    forgotten = [tid + carray([i32(p) for p in forget]) + NO_TAGS] if forget else []
    body = (compact_string(group) + compact_string(member) + i32(epoch) + i32(max_wait_ms)
            + i32(1) + i32(1 << 20) + i32(max_records) + i32(max_records)
            + (b"\x00" if version >= 2 else b"") + carray(topics) + carray(forgotten) + NO_TAGS)
    r = conn.call_flexible(SHARE_FETCH, version, body)
    out = {"throttle": r.i32(), "error": r.i16(), "message": r.cstring(), "lock_ms": r.i32()}

    def partition(r):
        p = {"partition": r.i32(), "error": r.i16(), "message": r.cstring(),
             "ack_error": r.i16(), "ack_message": r.cstring()}
        r.i32(), r.i32(), r.tags()
        p["records"] = r.cbytes()
        p["acquired"] = r.carray(lambda r: (r.i64(), r.i64(), r.i16(), r.tags())[:3])
        r.tags()
        return p

    def topic(r):
        t = r.uuid()
        ps = r.carray(partition)
        r.tags()
        return t, ps

    out["topics"] = r.carray(topic)
    out["partitions"] = {p["partition"]: p for _, ps in out["topics"] for p in ps}
    return out


def share_ack(conn, group, member, epoch, tid, acks, version=1, renew=False):
    parts = [struct.pack(">i", p) + ack_batches(b) + NO_TAGS for p, b in sorted(acks.items())]
    body = (compact_string(group) + compact_string(member) + i32(epoch)
            + ((b"\x01" if renew else b"\x00") if version >= 2 else b"")
            + carray([tid + carray(parts) + NO_TAGS]) + NO_TAGS)
    r = conn.call_flexible(SHARE_ACKNOWLEDGE, version, body)
    out = {"throttle": r.i32(), "error": r.i16(), "message": r.cstring()}
    if version >= 2:
        out["lock_ms"] = r.i32()

    def partition(r):
        p = {"partition": r.i32(), "error": r.i16(), "message": r.cstring()}
        r.i32(), r.i32(), r.tags(), r.tags()
        return p

    def topic(r):
        r.uuid()
        ps = r.carray(partition)
        r.tags()
        return ps

    out["partitions"] = {p["partition"]: p for ps in r.carray(topic) for p in ps}
    return out


def raw_member(conn, group, topic):
    """Joins `group` as a member subscribed to `topic` (ShareGroupHeartbeat, epoch 0)."""
    member = uuid.uuid4().hex[:22]
    hb = heartbeat(conn, group, member, 0, [topic])
    assert hb["error"] == 0, hb
    assert hb["epoch"] >= 1
    return member


def acquired_offsets(fetch, partition=0, topic=None):
    """The offsets acquired in `partition` (of `topic`'s id, if given)."""
    return [o for t, ps in fetch["topics"] if topic is None or t == topic
            for p in ps if p["partition"] == partition
            for first, last, _ in p["acquired"] for o in range(first, last + 1)]


# --- the ShareConsumer --------------------------------------------------------------------

def test_three_share_consumers_on_one_partition_accept_every_record_once(broker):
    topic, group, n = "jobs", "workers", 300
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, n)
    got = {i: [] for i in range(3)}
    stop = threading.Event()

    def work(i):
        c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit",
                           max_poll_records=10)
        try:
            while not stop.is_set():
                for m in poll_records(c, 0.5):
                    got[i].append(m.offset())
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
                    # Slow work, so that the other members get their share.
                    time.sleep(0.002)
                c.commit_sync(30)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 90
    while time.time() < deadline and sum(len(v) for v in got.values()) < n:
        time.sleep(0.2)
    time.sleep(2)  # anything delivered twice would show up now
    stop.set()
    for t in threads:
        t.join(60)
    every = sorted(o for v in got.values() for o in v)
    print(f"records per member: {[len(v) for v in got.values()]}")
    assert every == list(range(n)), f"{len(every)} deliveries of {n} records"
    assert sum(1 for v in got.values() if v) >= 2, {i: len(v) for i, v in got.items()}
    # Everything is accepted: a new member of the group gets nothing.
    c = share_consumer(broker, group, topic)
    try:
        assert [m.offset() for i in range(4) for m in poll_records(c, 1.0)] == []
    finally:
        c.close()


def test_release_redelivers_with_a_growing_delivery_count(broker):
    topic, group = "retry", "retriers"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 1)
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    counts = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(counts) < 3:
            for m in poll_records(c, 1.0):
                assert m.offset() == 0 and m.value() == b"m0"
                counts.append(m.delivery_count())
                c.acknowledge(m, AcknowledgeType.RELEASE if len(counts) < 3 else AcknowledgeType.ACCEPT)
            c.commit_sync(30)
        assert counts == [1, 2, 3]
        # Accepted at the third delivery: never again.
        assert [m.offset() for _ in range(3) for m in poll_records(c, 1.0)] == []
    finally:
        c.close()


def test_implicit_mode_accepts_what_the_previous_poll_returned(broker):
    topic, group, n = "implicit", "implicit-g", 50
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, n)
    c = share_consumer(broker, group, topic, max_poll_records=20)
    seen = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(seen) < n:
            seen += [m.offset() for m in poll_records(c, 1.0)]
        assert sorted(seen) == list(range(n))
        # The next poll acknowledges the last batch (librdkafka 2.16 does not accept the last
        # poll's records at close in implicit mode: it closes the session with no acks).
        poll_records(c, 0.5)
    finally:
        c.close()
    # All accepted: the share-partition's start offset moved past them.
    with Conn(broker.bootstrap) as conn:
        offsets = describe_share_offsets(conn, group, topic)
        assert offsets[0][0] == n, offsets
    c = share_consumer(broker, group, topic)
    try:
        assert [m.offset() for _ in range(3) for m in poll_records(c, 1.0)] == []
    finally:
        c.close()


def test_reject_and_the_delivery_limit_send_records_to_the_dead_letter_topic(broker):
    topic, group, dlq = "orders", "order-workers", "orders-dlq"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest",
                      share_delivery_count_limit=2, errors_deadletterqueue_topic_name=dlq)
    produce(broker, topic, 2)
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    deliveries = []
    try:
        deadline = time.time() + 60
        # Record 0 is rejected at once; record 1 released at each delivery until the limit.
        while time.time() < deadline and len(deliveries) < 3:
            for m in poll_records(c, 1.0):
                deliveries.append((m.offset(), m.delivery_count()))
                c.acknowledge(m, AcknowledgeType.REJECT if m.offset() == 0 else AcknowledgeType.RELEASE)
            c.commit_sync(30)
        assert sorted(deliveries) == [(0, 1), (1, 1), (1, 2)]
        assert [m.offset() for _ in range(3) for m in poll_records(c, 1.0)] == []
    finally:
        c.close()
    # Both are in the dead-letter topic, with headers naming where they came from.
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dlq-reader",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    reader.subscribe([dlq])
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and len(got) < 2:
        m = reader.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    reader.close()
    assert sorted(m.value() for m in got) == [b"m0", b"m1"]
    for m in got:
        h = {k: v.decode() for k, v in (m.headers() or [])}
        rejected = m.value() == b"m0"
        assert h == {
            "_dlq.errors.original.topic": topic,
            "_dlq.errors.original.partition": "0",
            "_dlq.errors.original.offset": "0" if rejected else "1",
            "_dlq.errors.group": group,
            "_dlq.errors.delivery.count": "1" if rejected else "2",
            "_dlq.errors.disposition": "CLIENT_REJECTED" if rejected else "MAX_DELIVERY_ATTEMPTS_REACHED",
        }, h


def test_kill_9_with_records_acquired_and_some_accepted_loses_and_repeats_nothing(broker):
    topic, group, n = "durable-q", "durable-g", 100
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, n)
    # A worker in its own process accepts some records, then holds an acquired batch.
    script = r"""
import json, sys
from confluent_kafka import ShareConsumer, AcknowledgeType
c = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                   "share.acknowledgement.mode": "explicit", "max.poll.records": 10})
c.subscribe([sys.argv[3]])
accepted = []
while len(accepted) < 40:
    ms = [m for m in c.poll(1.0) if m.error() is None]
    for m in ms:
        c.acknowledge(m, AcknowledgeType.ACCEPT)
    c.commit_sync(30)
    accepted += [m.offset() for m in ms]
print(json.dumps({"accepted": accepted}), flush=True)
held = []
while not held:
    held = [m.offset() for m in c.poll(1.0) if m.error() is None]
print(json.dumps({"held": held}), flush=True)
sys.stdin.read()
"""
    worker = subprocess.Popen([sys.executable, "-c", script, broker.bootstrap, group, topic],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        accepted = json.loads(worker.stdout.readline())["accepted"]
        held = json.loads(worker.stdout.readline())["held"]
    finally:
        broker.kill()
        worker.kill()
        worker.wait(10)
    assert accepted and held and not set(accepted) & set(held)
    broker.start()
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit",
                       max_poll_records=50)
    after = []
    try:
        deadline = time.time() + 60
        idle = 0
        while time.time() < deadline and idle < 3:
            ms = poll_records(c, 1.0)
            idle = 0 if ms else idle + 1
            for m in ms:
                after.append(m.offset())
                c.acknowledge(m, AcknowledgeType.ACCEPT)
            c.commit_sync(30)
    finally:
        c.close()
    assert not set(after) & set(accepted), "an accepted record was delivered again"
    assert sorted(after) == sorted(set(range(n)) - set(accepted)), "records lost or repeated"
    assert set(held) <= set(after)


# --- group configs, listing, describing -----------------------------------------------------

def test_group_configs_are_described_and_an_unknown_one_is_invalid_config(broker):
    group = "configured"
    set_group_configs(broker, group, share_record_lock_duration_ms=15000,
                      share_auto_offset_reset="earliest")
    res = ConfigResource(ResourceType.GROUP, group)
    a = admin(broker)
    configs = a.describe_configs([res])[res].result(20)
    assert configs["share.record.lock.duration.ms"].value == "15000"
    assert configs["share.auto.offset.reset"].value == "earliest"
    for name in ("share.delivery.count.limit", "share.isolation.level", "share.session.timeout.ms",
                 "share.heartbeat.interval.ms"):
        assert name in configs, sorted(configs)
    for bad in ({"share_no_such_config": "1"}, {"share_auto_offset_reset": "sideways"},
                {"share_record_lock_duration_ms": "-5"}):
        with pytest.raises(KafkaException) as e:
            set_group_configs(broker, group, **bad)
        assert e.value.args[0].code() == KafkaError.INVALID_CONFIG, (bad, e.value)
    # Nothing changed.
    configs = a.describe_configs([res])[res].result(20)
    assert configs["share.record.lock.duration.ms"].value == "15000"
    assert configs["share.auto.offset.reset"].value == "earliest"


def list_groups(conn, types=()):
    body = carray([]) + carray([compact_string(t) for t in types]) + NO_TAGS
    r = conn.call_flexible(LIST_GROUPS, 5, body)
    r.i32(), r.i16()

    def g(r):
        row = (r.cstring(), r.cstring(), r.cstring(), r.cstring())
        r.tags()
        return row

    return r.carray(g)


def describe_share_offsets(conn, group, topic):
    body = carray([compact_string(group) + carray([compact_string(topic) + carray([i32(0)]) + NO_TAGS])
                   + NO_TAGS]) + NO_TAGS
    r = conn.call_flexible(DESCRIBE_SHARE_GROUP_OFFSETS, 0, body)
    r.i32()
    out = {}

    def part(r):
        p, start, epoch, err, msg = r.i32(), r.i64(), r.i32(), r.i16(), r.cstring()
        r.tags()
        out[p] = (start, err)

    def top(r):
        r.cstring(), r.uuid(), r.carray(part), r.tags()

    def grp(r):
        r.cstring(), r.carray(top), r.i16(), r.cstring(), r.tags()

    r.carray(grp)
    return out


def test_list_describe_and_find_coordinator_know_share_groups(broker):
    topic, group = "listed", "listed-share"
    create_topic(broker, topic)
    with Conn(broker.bootstrap) as conn:
        member = raw_member(conn, group, topic)
        # FindCoordinator v4 with key type 2 (share): this broker.
        body = struct.pack(">b", 2) + carray([compact_string(f"{group}:x:0")]) + NO_TAGS
        r = conn.call_flexible(FIND_COORDINATOR, 4, body)
        r.i32()
        coords = r.carray(lambda r: (r.cstring(), r.i32(), r.cstring(), r.i32(), r.i16(), r.cstring(),
                                     r.tags())[:5])
        assert coords[0][3] == broker.port and coords[0][4] == 0, coords
        rows = list_groups(conn, ["share"])
        assert (group, "share") == (rows[0][0], rows[0][3]), rows
        assert all(row[3] == "share" for row in rows)
        assert list_groups(conn, ["classic"]) == []
        assert any(row[0] == group and row[3] == "share" for row in list_groups(conn))
        # ShareGroupDescribe: the member, its subscription, its assignment.
        body = carray([compact_string(group), compact_string("nope")]) + b"\x00" + NO_TAGS
        r = conn.call_flexible(SHARE_GROUP_DESCRIBE, 1, body)
        r.i32()

        def member_row(r):
            m = {"member_id": r.cstring(), "rack": r.cstring(), "epoch": r.i32(),
                 "client_id": r.cstring(), "host": r.cstring(),
                 "subscribed": r.carray(lambda r: r.cstring())}
            m["assignment"] = r.carray(lambda r: (r.uuid(), r.cstring(), r.carray(lambda r: r.i32()),
                                                  r.tags())[:3])
            r.tags(), r.tags()
            return m

        def group_row(r):
            g = {"error": r.i16(), "message": r.cstring(), "group": r.cstring(), "state": r.cstring(),
                 "epoch": r.i32(), "assignment_epoch": r.i32(), "assignor": r.cstring(),
                 "members": r.carray(member_row), "ops": r.i32()}
            r.tags()
            return g

        groups = r.carray(group_row)
        assert groups[0]["group"] == group and groups[0]["error"] == 0, groups
        assert groups[0]["state"].lower() == "stable", groups
        m = groups[0]["members"][0]
        assert m["member_id"] == member and m["subscribed"] == [topic], m
        assert [(name, parts) for _, name, parts in m["assignment"]] == [(topic, [0])], m
        assert groups[1]["group"] == "nope" and groups[1]["error"] == GROUP_ID_NOT_FOUND, groups[1]
        # DescribeGroups v5 shows it with protocol type "share".
        r = conn.call_flexible(DESCRIBE_GROUPS, 5, carray([compact_string(group)]) + b"\x00" + NO_TAGS)
        r.i32()

        def dg_member(r):
            row = (r.cstring(), r.cstring(), r.cstring(), r.cstring(), r.cbytes(), r.cbytes())
            r.tags()
            return row

        def dg(r):
            g = (r.i16(), r.cstring(), r.cstring(), r.cstring(), r.cstring(), r.carray(dg_member), r.i32())
            r.tags()
            return g

        [(err, gid, state, ptype, _, dmembers, _)] = r.carray(dg)
        assert (err, gid, state, ptype) == (0, group, "Stable", "share")
        assert [m[0] for m in dmembers] == [member]
        # ListGroups with a states filter.
        body = carray([compact_string("Empty")]) + carray([compact_string("share")]) + NO_TAGS
        r = conn.call_flexible(LIST_GROUPS, 5, body)
        r.i32(), r.i16()
        assert r.carray(lambda r: (r.cstring(), r.cstring(), r.cstring(), r.cstring(), r.tags())) == []
        # After the member leaves, the group is Empty.
        assert heartbeat(conn, group, member, -1)["error"] == 0
        rows = list_groups(conn, ["share"])
        assert (rows[0][0], rows[0][2]) == (group, "Empty"), rows


def test_share_group_offsets_are_described_altered_and_deleted(broker):
    topic, group = "offsets-q", "offsets-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 10)
    tid = topic_id(broker, topic)
    with Conn(broker.bootstrap) as conn:
        member = raw_member(conn, group, topic)
        f = share_fetch(conn, group, member, 0, tid)
        assert acquired_offsets(f) == list(range(10)), f
        a = share_ack(conn, group, member, 1, tid, {0: [(0, 3, [ACCEPT])]})
        assert a["error"] == 0 and a["partitions"][0]["error"] == 0, a
        assert describe_share_offsets(conn, group, topic) == {0: (4, 0)}
        # A group with members cannot be altered.
        body = compact_string(group) + carray([compact_string(topic) + carray(
            [struct.pack(">iq", 0, 8) + NO_TAGS]) + NO_TAGS]) + NO_TAGS
        r = conn.call_flexible(ALTER_SHARE_GROUP_OFFSETS, 0, body)
        r.i32()
        top_err = r.i16()
        assert top_err != 0, "altered a share group that has a member"
        # Leave (epoch -1), then alter: the start offset moves to 8.
        assert heartbeat(conn, group, member, -1)["error"] == 0
        r = conn.call_flexible(ALTER_SHARE_GROUP_OFFSETS, 0, body)
        r.i32()
        assert r.i16() == 0
        assert describe_share_offsets(conn, group, topic) == {0: (8, 0)}
        body = compact_string(group) + carray([compact_string(topic) + NO_TAGS]) + NO_TAGS
        r = conn.call_flexible(DELETE_SHARE_GROUP_OFFSETS, 0, body)
        r.i32()
        assert r.i16() == 0
        start, err = describe_share_offsets(conn, group, topic)[0]
        assert start == -1, (start, err)


# --- sessions and bad input, with raw frames ---------------------------------------------------

def test_share_session_epochs_are_checked(broker):
    topic, group = "sessions", "sessions-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 5)
    tid = topic_id(broker, topic)
    with Conn(broker.bootstrap) as conn:
        # A member that never joined: UNKNOWN_MEMBER_ID, and no session is kept for it.
        stranger = uuid.uuid4().hex[:22]
        assert heartbeat(conn, group, stranger, 0, [topic])["error"] == 0  # creates the group
        assert heartbeat(conn, group, stranger, -1)["error"] == 0
        f = share_fetch(conn, group, stranger, 0, tid, max_wait_ms=0)
        assert f["error"] == 25, f  # UNKNOWN_MEMBER_ID
        assert share_fetch(conn, group, stranger, 1, tid)["error"] == SHARE_SESSION_NOT_FOUND
        member = raw_member(conn, group, topic)
        # No session yet: epoch 1 is not found.
        f = share_fetch(conn, group, member, 1, tid)
        assert f["error"] == SHARE_SESSION_NOT_FOUND, f
        # Acknowledgements in the request that opens a session are invalid.
        f = share_fetch(conn, group, member, 0, tid, acks={0: [(0, 0, [ACCEPT])]})
        assert f["error"] == INVALID_REQUEST, f
        f = share_fetch(conn, group, member, 0, tid)
        assert f["error"] == 0 and acquired_offsets(f) == [0, 1, 2, 3, 4], f
        assert f["lock_ms"] > 0
        # The wrong next epoch: refused, nothing acknowledged.
        f = share_fetch(conn, group, member, 5, tid, acks={0: [(0, 4, [ACCEPT])]})
        assert f["error"] == INVALID_SHARE_SESSION_EPOCH, f
        a = share_ack(conn, group, member, 7, tid, {0: [(0, 4, [ACCEPT])]})
        assert a["error"] == INVALID_SHARE_SESSION_EPOCH, a
        assert describe_share_offsets(conn, group, topic) == {0: (0, 0)}
        # The right one: the session remembers the partition (no topics in the request).
        a = share_ack(conn, group, member, 1, tid, {0: [(0, 1, [ACCEPT])]})
        assert a["error"] == 0 and a["partitions"][0]["error"] == 0, a
        f = share_fetch(conn, group, member, 2, tid, partitions=(), acks={0: [(2, 4, [RELEASE])]})
        assert f["error"] == 0 and f["partitions"][0]["ack_error"] == 0, f
        assert acquired_offsets(f) == [2, 3, 4], f
        assert [c for _, _, c in f["partitions"][0]["acquired"]] == [2], f
        # Forgetting the partition: the next fetch acquires nothing.
        f = share_fetch(conn, group, member, 3, tid, partitions=(), forget=(0,), max_wait_ms=100)
        assert acquired_offsets(f) == [], f
        # Closing (-1) with an acknowledgement, then the session is gone.
        a = share_ack(conn, group, member, -1, tid, {0: [(2, 4, [ACCEPT])]})
        assert a["error"] == 0 and a["partitions"][0]["error"] == 0, a
        f = share_fetch(conn, group, member, 4, tid)
        assert f["error"] == SHARE_SESSION_NOT_FOUND, f
        assert describe_share_offsets(conn, group, topic) == {0: (5, 0)}


def test_acknowledging_what_was_not_acquired_is_invalid_record_state(broker):
    topic, group = "bad-acks", "bad-acks-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 4)
    tid = topic_id(broker, topic)
    with Conn(broker.bootstrap) as a_conn, Conn(broker.bootstrap) as b_conn:
        a = raw_member(a_conn, group, topic)
        b = raw_member(b_conn, group, topic)
        f = share_fetch(a_conn, group, a, 0, tid, max_records=2)
        mine = acquired_offsets(f)
        assert mine and max(mine) < 4, f
        f = share_fetch(b_conn, group, b, 0, tid, max_records=100)
        theirs = acquired_offsets(f)
        assert theirs and not set(mine) & set(theirs), f
        # A acknowledges B's record, and an offset nobody acquired (past the end).
        r = share_ack(a_conn, group, a, 1, tid, {0: [(theirs[0], theirs[0], [ACCEPT])]})
        assert r["partitions"][0]["error"] == INVALID_RECORD_STATE, r
        r = share_ack(a_conn, group, a, 2, tid, {0: [(100, 101, [ACCEPT])]})
        assert r["partitions"][0]["error"] == INVALID_RECORD_STATE, r
        # An unknown acknowledge type, and RENEW in v1.
        r = share_ack(a_conn, group, a, 3, tid, {0: [(mine[0], mine[0], [9])]})
        assert r["error"] == INVALID_REQUEST or r["partitions"][0]["error"] == INVALID_REQUEST, r
        r = share_ack(a_conn, group, a, 4, tid, {0: [(mine[0], mine[0], [RENEW])]})
        assert r["error"] == INVALID_REQUEST or r["partitions"][0]["error"] == INVALID_REQUEST, r
        # Nothing of that changed any state: B accepts its records, A its own.
        r = share_ack(b_conn, group, b, 1, tid, {0: [(theirs[0], theirs[-1], [ACCEPT])]})
        assert r["partitions"][0]["error"] == 0, r
        r = share_ack(a_conn, group, a, 5, tid, {0: [(mine[0], mine[-1], [ACCEPT])]})
        assert r["partitions"][0]["error"] == 0, r
        assert describe_share_offsets(a_conn, group, topic) == {0: (4, 0)}


def test_renew_in_v2_keeps_the_lock(broker):
    topic, group = "renew", "renew-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest",
                      share_record_lock_duration_ms=1000)
    produce(broker, topic, 2)
    tid = topic_id(broker, topic)
    with Conn(broker.bootstrap) as conn:
        _, versions = conn.api_versions(version=2)
        assert versions[SHARE_FETCH] == (1, 2) and versions[SHARE_ACKNOWLEDGE] == (1, 2)
        member = raw_member(conn, group, topic)
        f = share_fetch(conn, group, member, 0, tid, version=2)
        assert acquired_offsets(f) == [0, 1], f
        epoch = 1
        # Record 0 renewed every 400 ms for 2.4 s; record 1 left to expire.
        for _ in range(6):
            time.sleep(0.4)
            r = share_ack(conn, group, member, epoch, tid, {0: [(0, 0, [RENEW])]}, version=2, renew=True)
            epoch += 1
            assert r["error"] == 0 and r["partitions"][0]["error"] == 0, r
            assert r["lock_ms"] > 0
        r = share_ack(conn, group, member, epoch, tid, {0: [(0, 1, [ACCEPT, ACCEPT])]}, version=2)
        epoch += 1
        # 0 is still ours; 1's lock expired, so its acknowledgement is refused.
        assert r["partitions"][0]["error"] == INVALID_RECORD_STATE, r
        r = share_ack(conn, group, member, epoch, tid, {0: [(0, 0, [ACCEPT])]}, version=2)
        epoch += 1
        assert r["partitions"][0]["error"] == 0, r
        f = share_fetch(conn, group, member, epoch, tid, partitions=(), version=2)
        assert [(a, b, c) for a, b, c in f["partitions"][0]["acquired"]] == [(1, 1, 2)], f


def test_release_backoff_grows_between_deliveries(broker):
    """strom.retry.backoff.ms: a released record is acquirable again only after
    backoff x 2^(delivery_count-1) (+ up to 10 % jitter)."""
    topic, group, backoff_ms = "backoff", "backoff-g", 400
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest",
                      strom_retry_backoff_ms=backoff_ms, strom_retry_backoff_max_ms=60000)
    produce(broker, topic, 1)
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    released_at, delays, counts = None, [], []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(counts) < 3:
            for m in poll_records(c, 0.1):
                now = time.monotonic()
                if released_at is not None:
                    delays.append((now - released_at) * 1000)
                counts.append(m.delivery_count())
                c.acknowledge(m, AcknowledgeType.RELEASE if len(counts) < 3 else AcknowledgeType.ACCEPT)
                c.commit_sync(30)
                released_at = time.monotonic()
    finally:
        c.close()
    assert counts == [1, 2, 3]
    print(f"redelivery delays: {[round(d) for d in delays]} ms (backoff {backoff_ms} ms)")
    assert backoff_ms <= delays[0] < backoff_ms * 2 + 1000, delays
    assert 2 * backoff_ms <= delays[1] < backoff_ms * 4 + 1000, delays


def test_share_fetch_waits_for_records_and_wakes_on_produce(broker):
    topic, group = "waits", "waits-g"
    create_topic(broker, topic)
    tid = topic_id(broker, topic)
    with Conn(broker.bootstrap) as conn:
        member = raw_member(conn, group, topic)
        started = time.monotonic()
        f = share_fetch(conn, group, member, 0, tid, max_wait_ms=300)
        waited = time.monotonic() - started
        assert f["error"] == 0 and acquired_offsets(f) == [], f
        assert 0.25 <= waited < 5, waited
        # A record produced while a fetch waits ends the wait.
        threading.Timer(0.3, produce, args=(broker, topic, 1)).start()
        started = time.monotonic()
        f = share_fetch(conn, group, member, 1, tid, partitions=(), max_wait_ms=20000)
        waited = time.monotonic() - started
        assert acquired_offsets(f) == [0], f
        assert waited < 10, waited
        # max_records 0: acknowledgements only, no acquisition and no wait.
        produce(broker, topic, 1, prefix="n")
        started = time.monotonic()
        f = share_fetch(conn, group, member, 2, tid, partitions=(), acks={0: [(0, 0, [ACCEPT])]},
                        max_records=0, max_wait_ms=20000)
        assert time.monotonic() - started < 5
        assert f["partitions"][0]["ack_error"] == 0 and acquired_offsets(f) == [], f
        # An unknown topic id is answered UNKNOWN_TOPIC_ID and not kept in the session.
        bogus = uuid.uuid4().bytes
        f = share_fetch(conn, group, member, 3, bogus, max_wait_ms=1000)
        errors = {p["error"] for t, ps in f["topics"] for p in ps if t == bogus}
        assert errors == {100}, f  # UNKNOWN_TOPIC_ID
        # The session's partition of the known topic still fetches.
        assert acquired_offsets(f, topic=tid) == [1], f
        f = share_fetch(conn, group, member, 4, tid, partitions=(), max_wait_ms=100)
        assert f["error"] == 0 and f["topics"] == [], f


def test_huge_counts_in_share_requests_close_only_that_connection(broker):
    topic = "bounds"
    create_topic(broker, topic)
    for api, version, body in [
        # ShareFetch v1: topics announces 2^28 elements in a few bytes.
        (SHARE_FETCH, 1, compact_string("g") + compact_string("m") + i32(0) * 6
         + uvarint(1 << 28)),
        # ShareAcknowledge v2: acknowledge types of one batch announce 2^30.
        (SHARE_ACKNOWLEDGE, 2, compact_string("g") + compact_string("m") + i32(1) + b"\x00"
         + carray([uuid.uuid4().bytes + carray([i32(0) + uvarint(2) + struct.pack(">qq", 0, 0)
                                                 + uvarint(1 << 30)])])),
        # ShareGroupHeartbeat: a topic name longer than the frame.
        (SHARE_GROUP_HEARTBEAT, 1, compact_string("g") + compact_string("m") + i32(0)
         + compact_string(None) + uvarint(2) + uvarint(1 << 20) + b"x"),
    ]:
        with Conn(broker.bootstrap) as conn:
            conn.send_frame(kwire.request_frame(api, version, body, flexible=True))
            assert conn.is_closed(10), (api, version)
    # The broker serves the next client.
    with Conn(broker.bootstrap) as conn:
        member = raw_member(conn, "after-bounds", topic)
        assert member
    assert broker.running()


def test_a_share_consumer_goes_on_across_a_broker_restart(broker):
    """After a restart the member is unknown and its session gone: librdkafka rejoins
    (UNKNOWN_MEMBER_ID) and reopens its session (SHARE_SESSION_NOT_FOUND) by itself."""
    topic, group = "restart-q", "restart-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 10, prefix="a")
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    got = []

    def drain(until, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline and len(got) < until:
            for m in poll_records(c, 0.5):
                got.append(m.value())
                c.acknowledge(m, AcknowledgeType.ACCEPT)
            try:
                c.commit_sync(10)
            except KafkaException:
                pass  # while the broker is down

    try:
        drain(10, 60)
        assert sorted(got) == sorted(f"a{i}".encode() for i in range(10))
        broker.kill()
        broker.start()
        produce(broker, topic, 10, prefix="b")
        drain(20, 90)
    finally:
        c.close()
    assert sorted(got[10:]) == sorted(f"b{i}".encode() for i in range(10)), got


def test_http_and_kafka_members_share_one_group(broker_factory):
    """A ShareConsumer (Kafka door) and an HTTP receiver (POST /queues/{group}/receive) in one
    share group: each record is accepted once, by one of them."""
    import requests
    b = broker_factory(http=True)
    topic, group, n = "mixed-q", "mixed-g", 200
    create_topic(b, topic)
    set_group_configs(b, group, share_auto_offset_reset="earliest")
    produce(b, topic, n)
    kafka_got, http_got = [], []
    stop = threading.Event()

    def kafka_member():
        c = share_consumer(b, group, topic, share_acknowledgement_mode="explicit", max_poll_records=10)
        try:
            while not stop.is_set():
                for m in poll_records(c, 0.3):
                    kafka_got.append(m.offset())
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
                    time.sleep(0.002)
                c.commit_sync(30)
        finally:
            c.close()

    t = threading.Thread(target=kafka_member)
    t.start()
    with requests.Session() as s:
        deadline = time.time() + 90
        while time.time() < deadline and len(kafka_got) + len(http_got) < n:
            r = s.post(f"{b.http}/queues/{group}/receive",
                       json={"topics": [topic], "max_records": 10, "wait_ms": 300})
            assert r.status_code == 200, r.text
            recs = r.json()["records"]
            time.sleep(0.02 * len(recs))
            if recs:
                a = s.post(f"{b.http}/queues/{group}/ack",
                           json={"acks": [{"receipt": x["receipt"], "type": "accept"} for x in recs]})
                assert a.status_code == 200, a.text
                http_got.extend(x["offset"] for x in recs)
    time.sleep(1.5)
    stop.set()
    t.join(60)
    print(f"kafka member: {len(kafka_got)} records, http member: {len(http_got)}")
    assert sorted(kafka_got + http_got) == list(range(n))
    assert kafka_got and http_got


def test_an_expired_lock_gives_the_records_to_another_member(broker):
    """share.record.lock.duration.ms: records a member acquired and neither acknowledged nor
    renewed go to another member when the lock expires, with delivery count 2; the first
    member's late acknowledgement is refused (INVALID_RECORD_STATE)."""
    topic, group = "locks", "locks-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest",
                      share_record_lock_duration_ms=1500)
    produce(broker, topic, 5)
    slow = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    fast = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    try:
        held = []
        deadline = time.time() + 30
        while time.time() < deadline and len(held) < 5:
            held += poll_records(slow, 0.5)
        assert sorted(m.offset() for m in held) == [0, 1, 2, 3, 4]
        assert {m.delivery_count() for m in held} == {1}
        acquired_at = time.monotonic()
        got = []
        deadline = time.time() + 30
        while time.time() < deadline and len(got) < 5:
            for m in poll_records(fast, 0.5):
                got.append((m.offset(), m.delivery_count(), time.monotonic() - acquired_at))
                fast.acknowledge(m, AcknowledgeType.ACCEPT)
            fast.commit_sync(30)
        assert sorted((o, c) for o, c, _ in got) == [(o, 2) for o in range(5)], got
        assert min(t for _, _, t in got) >= 1.4, got
        # The slow member's acknowledgement comes too late.
        for m in held:
            slow.acknowledge(m, AcknowledgeType.ACCEPT)
        r = slow.commit_sync(30)
        errors = [e for e in r.values() if e is not None]
        assert errors and all(e.args[0].code() == KafkaError.INVALID_RECORD_STATE for e in errors), r
    finally:
        slow.close()
        fast.close()
    with Conn(broker.bootstrap) as conn:
        assert describe_share_offsets(conn, group, topic) == {0: (5, 0)}


def test_acknowledgements_pending_at_close_are_not_lost(broker):
    """close() sends the pending acknowledgements (closing the share session, epoch -1) and
    the leave (ShareGroupHeartbeat epoch -1) at once, on two connections: the leave waits for
    the session to close, so the acknowledgements land and nothing is redelivered."""
    topic, group = "closing", "closing-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 10)
    total = 10
    with Conn(broker.bootstrap) as conn:
        for round in range(4):
            c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
            got = []
            deadline = time.time() + 30
            while time.time() < deadline and not got:
                got = poll_records(c, 1.0)
            assert sorted(m.offset() for m in got) == list(range(total - len(got), total)), round
            for m in got:
                c.acknowledge(m, AcknowledgeType.ACCEPT)
            c.close()  # no commit before: close sends them
            assert describe_share_offsets(conn, group, topic) == {0: (total, 0)}, round
            produce(broker, topic, 1, prefix=f"r{round}-")
            total += 1


def test_a_share_session_that_ends_gives_back_its_records(broker):
    """Closing a share session (epoch -1) or replacing it (epoch 0 again) releases what its
    member still holds at once, without waiting for the locks (30 s here)."""
    topic, group = "session-end", "session-end-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 5)
    tid = topic_id(broker, topic)
    with Conn(broker.bootstrap) as a_conn, Conn(broker.bootstrap) as b_conn:
        a = raw_member(a_conn, group, topic)
        b = raw_member(b_conn, group, topic)
        assert acquired_offsets(share_fetch(a_conn, group, a, 0, tid)) == [0, 1, 2, 3, 4]
        r = share_ack(a_conn, group, a, -1, tid, {0: [(0, 1, [ACCEPT])]})
        assert r["partitions"][0]["error"] == 0, r
        f = share_fetch(b_conn, group, b, 0, tid, max_wait_ms=2000)
        assert [(x, y, c) for x, y, c in f["partitions"][0]["acquired"]] == [(2, 4, 2)], f
        # B opens a new session while holding 2..4: they are released, and acquired again.
        f = share_fetch(b_conn, group, b, 0, tid, max_wait_ms=2000)
        assert [(x, y, c) for x, y, c in f["partitions"][0]["acquired"]] == [(2, 4, 3)], f
