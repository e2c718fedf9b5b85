"""KIP-848 consumer groups (the consumer rebalance protocol) with confluent-kafka's
`group.protocol=consumer` members (librdkafka >= 2.12) against `strom serve`: join and consume,
rebalance with incremental revocation when a second member joins (no partition held by two
members at once), a regex subscription picking up a topic created later, leave, a static
member coming back to its partitions, committed offsets shared with later members (classic
ones too), ListGroups / ConsumerGroupDescribe, durability over a restart, and bad input
answered with Kafka's error codes over the wire."""

import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, ConsumerGroupType, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from kwire import Conn

pytestmark = pytest.mark.timeout(240)

CONSUMER_GROUP_HEARTBEAT, CONSUMER_GROUP_DESCRIBE = 68, 69
FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, UNSUPPORTED_ASSIGNOR = 110, 25, 112
INVALID_REGULAR_EXPRESSION, UNRELEASED_INSTANCE_ID, INVALID_REQUEST = 128, 111, 42
STALE_MEMBER_EPOCH, GROUP_ID_NOT_FOUND = 113, 69

FAST = {"group_consumer_heartbeat_interval_ms": 300, "group_consumer_session_timeout_ms": 6000}


@pytest.fixture
def kbroker(broker_factory):
    return broker_factory(**FAST)


def create_topic(broker, name, partitions=4):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(30)


def produce(broker, topic, n, partitions=4, start=0):
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(start, start + n):
        p.produce(topic, value=f"v{i}".encode(), partition=i % partitions)
    assert p.flush(30) == 0


class Member:
    """A `group.protocol=consumer` consumer polled on its own thread. Every assignment change
    is logged, with the time, in `log` shared by the members of a test (under `lock`)."""

    def __init__(self, broker, group, topics, name, log, lock, **extra):
        conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
                "group.protocol": "consumer", "auto.offset.reset": "earliest",
                "enable.auto.commit": True, "auto.commit.interval.ms": 200}
        conf.update(extra)
        self.name, self.log, self.lock = name, log, lock
        self.c = Consumer(conf)
        self.held = set()
        self.messages = []
        self.stop_flag = threading.Event()
        self.c.subscribe(topics, on_assign=self._assign, on_revoke=self._revoke,
                         on_lost=self._revoke)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _assign(self, _c, ps):
        with self.lock:
            for p in ps:
                key = (p.topic, p.partition)
                owners = [e for e in self.log if e[0] == "held" and e[2] == key]
                self.held.add(key)
                self.log.append(("assign", self.name, key, time.monotonic()))
                _ = owners

    def _revoke(self, _c, ps):
        with self.lock:
            for p in ps:
                key = (p.topic, p.partition)
                self.held.discard(key)
                self.log.append(("revoke", self.name, key, time.monotonic()))

    def _run(self):
        while not self.stop_flag.is_set():
            m = self.c.poll(0.1)
            if m is None or m.error():
                continue
            with self.lock:
                self.messages.append((m.topic(), m.partition(), m.offset(), m.value().decode()))

    def holding(self):
        with self.lock:
            return set(self.held)

    def consumed(self):
        with self.lock:
            return list(self.messages)

    def pause(self):
        """Stops polling (the consumer stays open)."""
        self.stop_flag.set()
        self.thread.join(10)

    def close(self):
        self.pause()
        self.c.close()


def no_partition_held_twice(log):
    """Replays the assignment log: a partition is never assigned while another holds it."""
    owner = {}
    for kind, name, key, _ in log:
        if kind == "assign":
            assert owner.get(key) in (None, name), f"{key} assigned to {name} while {owner[key]} holds it"
            owner[key] = name
        elif owner.get(key) == name:
            del owner[key]


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def consumer_groups(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = admin.list_consumer_groups(request_timeout=10).result(20)
    return {g.group_id: g for g in res.valid}


def describe(broker, group):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(20)


# --- members with confluent-kafka ------------------------------------------------------------

def test_join_consume_second_member_rebalances_then_leave(kbroker):
    topic, group = "kip848-orders", "kip848-g1"
    create_topic(kbroker, topic)
    produce(kbroker, topic, 40)
    log, lock = [], threading.Lock()
    a = Member(kbroker, group, [topic], "a", log, lock)
    try:
        wait_for(lambda: len(a.consumed()) == 40, what="a consumes everything")
        assert len(a.holding()) == 4
        b = Member(kbroker, group, [topic], "b", log, lock)
        try:
            wait_for(lambda: len(a.holding()) == 2 and len(b.holding()) == 2, what="2 + 2")
            assert a.holding().isdisjoint(b.holding())
            produce(kbroker, topic, 40, start=40)
            wait_for(lambda: {m[3] for m in a.consumed() + b.consumed()} >= {f"v{i}" for i in range(80)},
                     what="the second batch consumed by a and b")
            assert {m[1] for m in b.consumed()} <= {p for _, p in b.holding()}
            groups = consumer_groups(kbroker)
            assert groups[group].type == ConsumerGroupType.CONSUMER
            d = describe(kbroker, group)
            assert d.type == ConsumerGroupType.CONSUMER
            assert len(d.members) == 2
            assigned = sorted(tp.partition for m in d.members for tp in m.assignment.topic_partitions)
            assert assigned == [0, 1, 2, 3]
            assert str(d.state).endswith("STABLE")
        finally:
            b.close()
        # b left (epoch -1): a gets its partitions back.
        wait_for(lambda: len(a.holding()) == 4, what="a holds all after b left")
        no_partition_held_twice(log)
    finally:
        a.close()
    wait_for(lambda: str(consumer_groups(kbroker)[group].state).endswith("EMPTY"), what="empty group")


def test_regex_subscription_picks_up_a_topic_created_later(kbroker):
    group = "kip848-regex"
    create_topic(kbroker, "kre-one", 2)
    create_topic(kbroker, "other-topic", 2)
    produce(kbroker, "kre-one", 4, partitions=2)
    produce(kbroker, "other-topic", 4, partitions=2)
    log, lock = [], threading.Lock()
    m = Member(kbroker, group, ["^kre-.*"], "a", log, lock, **{"topic.metadata.refresh.interval.ms": 500})
    try:
        wait_for(lambda: len(m.consumed()) == 4, what="the first matching topic")
        create_topic(kbroker, "kre-two", 2)
        produce(kbroker, "kre-two", 6, partitions=2)
        wait_for(lambda: len([x for x in m.consumed() if x[0] == "kre-two"]) == 6, timeout=60,
                 what="the topic created later")
        assert not [x for x in m.consumed() if x[0] == "other-topic"]
    finally:
        m.close()


def test_static_member_restart_keeps_its_assignment(kbroker):
    topic, group = "kip848-static", "kip848-static-g"
    create_topic(kbroker, topic)
    log, lock = [], threading.Lock()
    a = Member(kbroker, group, [topic], "a", log, lock, **{"group.instance.id": "inst-a"})
    b = Member(kbroker, group, [topic], "b", log, lock, **{"group.instance.id": "inst-b"})
    try:
        wait_for(lambda: len(a.holding()) == 2 and len(b.holding()) == 2, what="2 + 2")
        before_a, before_b = a.holding(), b.holding()
        a.close()
        a = Member(kbroker, group, [topic], "a2", log, lock, **{"group.instance.id": "inst-a"})
        wait_for(lambda: a.holding() == before_a, what="the restarted static member's partitions")
        assert b.holding() == before_b
        no_partition_held_twice(log)
    finally:
        a.close()
        b.close()


def test_committed_offsets_are_resumed_by_new_and_classic_consumers(kbroker):
    topic, group = "kip848-offsets", "kip848-offsets-g"
    create_topic(kbroker, topic, 1)
    produce(kbroker, topic, 10, partitions=1)
    log, lock = [], threading.Lock()
    a = Member(kbroker, group, [topic], "a", log, lock, **{"enable.auto.commit": False})
    wait_for(lambda: len(a.consumed()) == 10, what="10 consumed")
    a.pause()
    a.c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    a.close()
    produce(kbroker, topic, 5, partitions=1, start=10)
    b = Member(kbroker, group, [topic], "b", log, lock, **{"enable.auto.commit": False})
    try:
        wait_for(lambda: len(b.consumed()) == 5, what="the 5 new ones")
        assert [x[2] for x in b.consumed()] == [10, 11, 12, 13, 14]
        b.pause()
        b.c.commit(offsets=[TopicPartition(topic, 0, 15)], asynchronous=False)
    finally:
        b.close()
    wait_for(lambda: str(consumer_groups(kbroker)[group].state).endswith("EMPTY"), what="empty")
    # A classic member joins the empty consumer group (it becomes a classic group again) and
    # resumes from the same offsets.
    produce(kbroker, topic, 3, partitions=1, start=15)
    c = Consumer({"bootstrap.servers": kbroker.bootstrap, "group.id": group,
                  "group.protocol": "classic", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m.offset())
        assert got == [15, 16, 17]
        assert consumer_groups(kbroker)[group].type == ConsumerGroupType.CLASSIC
    finally:
        c.close()


def test_consumer_group_state_survives_a_restart(broker_factory):
    b = broker_factory(**FAST)
    topic, group = "kip848-durable", "kip848-durable-g"
    create_topic(b, topic)
    log, lock = [], threading.Lock()
    a = Member(b, group, [topic], "a", log, lock)
    wait_for(lambda: len(a.holding()) == 4, what="assigned")
    before = describe(b, group)
    a.pause()
    b.stop()
    b.start()
    d = describe(b, group)
    assert d.type == ConsumerGroupType.CONSUMER
    assert [m.member_id for m in d.members] == [m.member_id for m in before.members]
    assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1, 2, 3]
    a.c.close()


# --- the wire: bad input -------------------------------------------------------------------

def kwire_uuid(u) -> bytes:
    """The 16 bytes of a UUID as `kwire.Reader.uuid` returns it."""
    if isinstance(u, bytes):
        return u
    return uuid.UUID(str(u)).bytes


def heartbeat_body(group, member, epoch, topics=None, regex=None, assignor=None, instance=None,
                   rebalance_timeout=30000, owned=None):
    body = kwire.compact_string(group) + kwire.compact_string(member) + struct.pack(">i", epoch)
    body += kwire.compact_string(instance) + kwire.compact_string(None)
    body += struct.pack(">i", rebalance_timeout)
    if topics is None:
        body += kwire.uvarint(0)
    else:
        body += kwire.compact_array_count(len(topics)) + b"".join(kwire.compact_string(t) for t in topics)
    body += kwire.compact_string(regex) + kwire.compact_string(assignor)
    if owned is None:
        body += kwire.uvarint(0)
    else:
        body += kwire.compact_array_count(len(owned))
        for tid, parts in owned:
            body += tid + kwire.compact_array_count(len(parts)) + b"".join(struct.pack(">i", p) for p in parts)
            body += kwire.NO_TAGS
    return body + kwire.NO_TAGS


def heartbeat(conn, *args, **kw):
    r = conn.call_flexible(CONSUMER_GROUP_HEARTBEAT, 1, heartbeat_body(*args, **kw))
    out = {"throttle": r.i32(), "error": r.i16(), "message": r.cstring(), "member": r.cstring(),
           "epoch": r.i32(), "interval": r.i32(), "assignment": None}
    if out["error"] == 0 and r.i8() == 1:
        out["assignment"] = [(t, ps) for t, ps, _ in
                             r.carray(lambda r: (r.uuid(), r.carray(lambda r: r.i32()), r.tags()))]
    return out


def test_a_member_that_does_not_revoke_in_time_is_fenced(kbroker):
    create_topic(kbroker, "kip848-slow", 2)
    with Conn(kbroker.bootstrap) as conn:
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        ja = heartbeat(conn, "slow-g", a, 0, ["kip848-slow"], rebalance_timeout=1000)
        assert ja["error"] == 0
        (tid, parts), = ja["assignment"]
        assert sorted(parts) == [0, 1]
        owned = [(kwire_uuid(tid), parts)]
        jb = heartbeat(conn, "slow-g", b, 0, ["kip848-slow"], rebalance_timeout=1000)
        assert jb["error"] == 0 and jb["epoch"] == ja["epoch"] + 1
        assert jb["assignment"] == []  # a still holds both
        # a is told to give one up; it keeps reporting both (it does not revoke).
        ra = heartbeat(conn, "slow-g", a, ja["epoch"], None, rebalance_timeout=-1, owned=owned)
        assert ra["error"] == 0 and ra["epoch"] == ja["epoch"]
        assert len(ra["assignment"][0][1]) == 1
        rb = heartbeat(conn, "slow-g", b, jb["epoch"], None, rebalance_timeout=-1, owned=[])
        assert rb["assignment"] in (None, [])
        time.sleep(1.6)
        # Past its rebalance timeout a was removed: b gets both partitions.
        assert heartbeat(conn, "slow-g", a, ja["epoch"], None, rebalance_timeout=-1,
                         owned=owned)["error"] == UNKNOWN_MEMBER_ID
        got = heartbeat(conn, "slow-g", b, jb["epoch"], None, rebalance_timeout=-1, owned=[])
        assert got["error"] == 0 and got["epoch"] > jb["epoch"]
        assert sorted(got["assignment"][0][1]) == [0, 1]


def test_bad_heartbeats_get_kafkas_error_codes(kbroker):
    create_topic(kbroker, "kip848-bad", 2)
    with Conn(kbroker.bootstrap) as conn:
        member = uuid.uuid4().hex
        assert heartbeat(conn, "bad-g", member, 0, ["kip848-bad"], assignor="sticky")["error"] == UNSUPPORTED_ASSIGNOR
        assert heartbeat(conn, "bad-g", member, 0, None, regex="(unclosed")["error"] == INVALID_REGULAR_EXPRESSION
        # A first join without any subscription, and an epoch below -2.
        assert heartbeat(conn, "bad-g", member, 0, None)["error"] == INVALID_REQUEST
        assert heartbeat(conn, "bad-g", member, -3, ["kip848-bad"])["error"] == INVALID_REQUEST
        ok = heartbeat(conn, "bad-g", member, 0, ["kip848-bad"], assignor="range")
        assert ok["error"] == 0 and ok["epoch"] >= 1 and ok["interval"] == 300
        assert heartbeat(conn, "bad-g", member, ok["epoch"] + 5, None)["error"] == FENCED_MEMBER_EPOCH
        assert heartbeat(conn, "bad-g", "nobody", 1, None)["error"] == UNKNOWN_MEMBER_ID
        # Static members: a second live incarnation of an instance id is refused.
        s1 = heartbeat(conn, "bad-g", uuid.uuid4().hex, 0, ["kip848-bad"], instance="i1")
        assert s1["error"] == 0
        assert heartbeat(conn, "bad-g", uuid.uuid4().hex, 0, ["kip848-bad"], instance="i1")["error"] == UNRELEASED_INSTANCE_ID
        # Leave: epoch -1 answers -1, and the member is gone.
        left = heartbeat(conn, "bad-g", member, -1, None)
        assert left["error"] == 0 and left["epoch"] == -1
        assert heartbeat(conn, "bad-g", member, ok["epoch"], None)["error"] == UNKNOWN_MEMBER_ID
        # The connection is still served.
        assert heartbeat(conn, "bad-g", uuid.uuid4().hex, 0, ["kip848-bad"])["error"] == 0


def test_range_assignor_gives_confluent_members_contiguous_ranges(kbroker):
    """`group.remote.assignor=range`: each member gets a contiguous range of every topic."""
    group = "kip848-range-g"
    topics = ["kip848-range-a", "kip848-range-b"]
    for t in topics:
        create_topic(kbroker, t)
    log, lock = [], threading.Lock()
    extra = {"group.remote.assignor": "range"}
    a = Member(kbroker, group, topics, "a", log, lock, **extra)
    b = Member(kbroker, group, topics, "b", log, lock, **extra)
    try:
        wait_for(lambda: len(a.holding()) == 4 and len(b.holding()) == 4, what="4 + 4")
        for m in (a, b):
            for t in topics:
                parts = sorted(p for tt, p in m.holding() if tt == t)
                assert len(parts) == 2 and parts[1] == parts[0] + 1, (m.name, t, parts)
        # The same range of both topics goes to the same member (range assigns topic by topic
        # in member order).
        assert {p for t, p in a.holding() if t == topics[0]} == {p for t, p in a.holding() if t == topics[1]}
        no_partition_held_twice(log)
    finally:
        a.close()
        b.close()


def test_the_default_heartbeat_interval_scales_with_the_group(broker):
    """No interval set: 10 ms per member, from 500 ms (so a small group rebalances in well under
    a second) to Kafka's 5 s (a large group costs the coordinator ~100 heartbeats/s at most)."""
    create_topic(broker, "kip848-interval", 2)
    with Conn(broker.bootstrap) as conn:
        first = heartbeat(conn, "interval-g", uuid.uuid4().hex, 0, ["kip848-interval"])
        assert first["error"] == 0 and first["interval"] == 500
        for _ in range(98):
            assert heartbeat(conn, "interval-g", uuid.uuid4().hex, 0, ["kip848-interval"])["error"] == 0
        # The 100th member joins a group of 99, and waits for partitions others hold (asked
        # back soon); a member with nothing to wait for is told the group's interval.
        assert heartbeat(conn, "interval-g", uuid.uuid4().hex, 0, ["kip848-interval"])["error"] == 0
        again = heartbeat(conn, "interval-g", first["member"], first["epoch"], None)
        assert again["error"] == 0 and again["interval"] == 1000


def test_offset_commit_with_a_stale_member_epoch(kbroker):
    create_topic(kbroker, "kip848-commit", 1)
    with Conn(kbroker.bootstrap) as conn:
        member = uuid.uuid4().hex
        ok = heartbeat(conn, "commit-g", member, 0, ["kip848-commit"])
        assert ok["error"] == 0
        epoch = ok["epoch"]

        def commit(e):
            # OffsetCommit v9 (flexible): group, generation/epoch, member, instance, topics.
            body = kwire.compact_string("commit-g") + struct.pack(">i", e) + kwire.compact_string(member)
            body += kwire.compact_string(None) + kwire.compact_array_count(1) + kwire.compact_string("kip848-commit")
            body += kwire.compact_array_count(1) + struct.pack(">iqi", 0, 3, -1) + kwire.compact_string("")
            body += kwire.NO_TAGS + kwire.NO_TAGS + kwire.NO_TAGS
            r = conn.call_flexible(kwire.OFFSET_COMMIT, 9, body)
            r.i32()
            topics = r.carray(lambda r: (r.cstring(), r.carray(lambda r: (r.i32(), r.i16(), r.tags())), r.tags()))
            return topics[0][1][0][1]

        assert commit(epoch) == 0
        assert commit(epoch - 1) == STALE_MEMBER_EPOCH
        assert commit(epoch + 1) == FENCED_MEMBER_EPOCH


# --- strom-cli -------------------------------------------------------------------------------

def test_strom_group_list_and_describe_show_a_consumer_group(kbroker):
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cli = os.environ.get("STROM_CLI") or str(root / "target" / "debug" / "strom-cli")
    if not os.environ.get("STROM_CLI"):
        subprocess.run(["cargo", "build", "-q", "-p", "strom-client"], cwd=root, check=True)

    def run(*args):
        p = subprocess.run([cli, *args, "--bootstrap", kbroker.bootstrap, "--json"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    topic, group = "kip848-cli", "kip848-cli-g"
    create_topic(kbroker, topic, 3)
    produce(kbroker, topic, 6, partitions=3)
    log, lock = [], threading.Lock()
    a = Member(kbroker, group, [topic], "a", log, lock)
    try:
        wait_for(lambda: len(a.consumed()) == 6 and len(a.holding()) == 3, what="consumed")
        wait_for(lambda: any(g["group"] == group and g["state"] == "Stable" for g in run("group", "list")),
                 what="listed as Stable")
        listed = [g for g in run("group", "list") if g["group"] == group][0]
        assert listed["type"] == "consumer" and listed["protocol_type"] == "consumer"
        d = run("group", "describe", group)
        assert d["type"] == "consumer" and d["state"] == "Stable" and d["protocol"] == "uniform"
        assert d["group_epoch"] >= 1 and d["assignment_epoch"] == d["group_epoch"]
        (m,) = d["members"]
        assert m["member_epoch"] == d["assignment_epoch"]
        assert sorted(p for t in m["assignment"] for p in t["partitions"]) == [0, 1, 2]
    finally:
        a.close()


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_a_classic_member_joins_a_consumer_group(kbroker, assignor):
    """Kafka 4's mixed groups: a classic consumer (JoinGroup/SyncGroup/Heartbeat) joins a
    group of KIP-848 members; the broker assigns it its share, partitions still move only once
    released, and it leaves again."""
    topic, group = f"kip848-mixed-{assignor}", f"kip848-mixed-g-{assignor}"
    create_topic(kbroker, topic)
    produce(kbroker, topic, 20)
    log, lock = [], threading.Lock()
    a = Member(kbroker, group, [topic], "a", log, lock)
    try:
        wait_for(lambda: len(a.holding()) == 4 and len(a.consumed()) == 20, what="a alone")
        b = Member(kbroker, group, [topic], "b", log, lock,
                   **{"group.protocol": "classic", "partition.assignment.strategy": assignor,
                      "heartbeat.interval.ms": 300, "session.timeout.ms": 6000})
        try:
            wait_for(lambda: len(a.holding()) == 2 and len(b.holding()) == 2, timeout=40,
                     what="2 + 2 with a classic member")
            assert a.holding().isdisjoint(b.holding())
            produce(kbroker, topic, 20, start=20)
            wait_for(lambda: {m[3] for m in b.consumed()} >= {f"v{i}" for i in range(20, 40) if i % 4 in
                                                              {p for _, p in b.holding()}},
                     what="b consumes its partitions")
            d = describe(kbroker, group)
            assert d.type == ConsumerGroupType.CONSUMER and len(d.members) == 2
        finally:
            b.close()
        wait_for(lambda: len(a.holding()) == 4, what="a holds all after the classic member left")
        no_partition_held_twice(log)
    finally:
        a.close()


def test_a_classic_group_is_upgraded_when_a_consumer_protocol_member_joins(kbroker):
    """Kafka 4's online upgrade: a Stable classic group of consumers becomes a consumer group
    when a `group.protocol=consumer` member joins; the classic member keeps consuming, gives
    up its share, and the new member gets it once released."""
    topic, group = "kip848-upgrade", "kip848-upgrade-g"
    create_topic(kbroker, topic)
    produce(kbroker, topic, 20)
    log, lock = [], threading.Lock()
    a = Member(kbroker, group, [topic], "a", log, lock,
               **{"group.protocol": "classic", "heartbeat.interval.ms": 300, "session.timeout.ms": 6000})
    try:
        wait_for(lambda: len(a.holding()) == 4 and len(a.consumed()) == 20, timeout=40, what="classic a alone")
        assert consumer_groups(kbroker)[group].type == ConsumerGroupType.CLASSIC
        b = Member(kbroker, group, [topic], "b", log, lock)
        try:
            wait_for(lambda: len(a.holding()) == 2 and len(b.holding()) == 2, timeout=40,
                     what="2 + 2 after the upgrade")
            assert a.holding().isdisjoint(b.holding())
            assert consumer_groups(kbroker)[group].type == ConsumerGroupType.CONSUMER
            assert len(describe(kbroker, group).members) == 2
        finally:
            b.close()
        wait_for(lambda: len(a.holding()) == 4, what="a holds all again")
        no_partition_held_twice(log)
    finally:
        a.close()
