"""Consumer groups with real clients: confluent-kafka (librdkafka) and kafka-python consumers,
each in its own process (group_consumer.py), against `strom serve`."""

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from kwire import Conn

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent
CLIENTS = ["confluent", "kafka-python"]
OFFSET_COMMIT = 8
UNKNOWN_MEMBER_ID = 25
ILLEGAL_GENERATION = 22


class Member:
    """One consumer process; its JSON lines are collected by a reader thread."""

    def __init__(self, broker, group, topic, client="confluent", **cfg):
        conf = {"bootstrap": broker.bootstrap, "group": group, "topic": topic, "client": client, **cfg}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "group_consumer.py"), json.dumps(conf)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lock = threading.Lock()
        self.assignment = []
        self.revocations = []
        self.messages = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            d = json.loads(line)
            with self.lock:
                if "assignment" in d:
                    self.assignment = d["assignment"]
                elif "revoked" in d:
                    self.revocations.append(d["revoked"])
                elif "m" in d:
                    self.messages.append(tuple(d["m"]))

    def owned(self):
        with self.lock:
            return list(self.assignment)

    def consumed(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.thread.join(5)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def members():
    started = []
    yield started
    for m in started:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(10)


def create(broker, name, partitions):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)[name].result(timeout=20)


def produce(broker, topic, values, partitions=None):
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
    for i, v in enumerate(values):
        if partitions:
            p.produce(topic, value=v.encode(), partition=i % partitions)
        else:
            p.produce(topic, key=v.encode(), value=v.encode())
    assert p.flush(30) == 0


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def split_covers(ms, partitions):
    owned = [m.owned() for m in ms]
    flat = [p for o in owned for p in o]
    return all(owned) and len(flat) == len(set(flat)) and sorted(flat) == list(range(partitions))


@pytest.mark.parametrize("client", CLIENTS)
def test_three_consumers_share_twelve_partitions(broker_factory, members, client):
    # kafka-python 3.0.12's group leader sometimes goes silent after a SyncGroup when it led a
    # one-member generation just before (seen 2 times in ~50 runs under CPU load; the broker
    # had answered every request, see the issue 4 note). Kafka's default initial delay (3 s)
    # lets the three processes join one first generation, which is what this test is about.
    delay = 0 if client == "confluent" else 3000
    broker = broker_factory(group_initial_rebalance_delay_ms=delay)
    create(broker, "shared", 12)
    ms = [Member(broker, "g-shared", "shared", client) for _ in range(3)]
    members.extend(ms)
    wait_for(lambda: split_covers(ms, 12), 60, "3 disjoint assignments covering 12 partitions")
    produce(broker, "shared", [f"v{i}" for i in range(1200)], partitions=12)
    wait_for(lambda: sum(len(m.consumed()) for m in ms) >= 1200, 60, "every message consumed")
    got = [v for m in ms for (_, _, v) in m.consumed()]
    assert sorted(got) == sorted(f"v{i}" for i in range(1200))
    for m in ms:  # each consumed only its own partitions
        assert {p for (p, _, _) in m.consumed()} <= set(m.owned())


def test_killed_consumer_loses_its_partitions_after_the_session_timeout(broker_factory, members):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "lease", 12)
    extra = {"session.timeout.ms": 4000, "heartbeat.interval.ms": 500}
    ms = [Member(broker, "g-lease", "lease", extra=extra) for _ in range(3)]
    members.extend(ms)
    wait_for(lambda: split_covers(ms, 12), 60, "initial assignment")
    produce(broker, "lease", [f"a{i}" for i in range(1200)], partitions=12)
    wait_for(lambda: sum(len(m.consumed()) for m in ms) >= 1200, 60, "first half consumed")
    victim, survivors = ms[0], ms[1:]
    killed_at = time.monotonic()
    victim.kill()
    produce(broker, "lease", [f"b{i}" for i in range(1200)], partitions=12)
    wait_for(lambda: split_covers(survivors, 12), 60, "survivors own all 12 partitions")
    took = time.monotonic() - killed_at
    assert took >= 3.0, f"partitions moved after {took:.1f}s, before the 4 s session timeout ran out"
    want = {f"a{i}" for i in range(1200)} | {f"b{i}" for i in range(1200)}
    wait_for(lambda: want <= {v for m in ms for (_, _, v) in m.consumed()}, 60, "every message consumed at least once")


def test_graceful_close_rebalances_at_once(broker_factory, members):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "polite", 6)
    extra = {"session.timeout.ms": 30000}
    ms = [Member(broker, "g-polite", "polite", extra=extra) for _ in range(2)]
    members.extend(ms)
    wait_for(lambda: split_covers(ms, 6), 60, "initial assignment")
    ms[0].stop()  # LeaveGroup: no need to wait for the 30 s session timeout
    wait_for(lambda: split_covers(ms[1:], 6), 20, "the remaining member owns all 6 partitions")


@pytest.mark.parametrize("client", CLIENTS)
def test_commit_stop_restart_resumes_at_committed_offsets(broker_factory, members, client):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "resume", 4)
    produce(broker, "resume", [f"r{i}" for i in range(400)], partitions=4)
    first = Member(broker, "g-resume", "resume", client, commit="sync", max_messages=150)
    members.append(first)
    first.proc.wait(60)
    first.thread.join(5)
    seen_first = first.consumed()
    assert len(seen_first) >= 150
    broker.restart()  # committed offsets survive a broker restart
    second = Member(broker, "g-resume", "resume", client, commit="sync")
    members.append(second)
    wait_for(lambda: len(second.consumed()) >= 400 - len(seen_first), 60, "the rest consumed")
    second.stop()
    both = [v for (_, _, v) in seen_first] + [v for (_, _, v) in second.consumed()]
    assert sorted(both) == sorted(f"r{i}" for i in range(400)), "a message was lost or consumed twice"
    # The second consumer started each partition exactly where the first one committed.
    last_first = {}
    for p, o, _ in seen_first:
        last_first[p] = max(last_first.get(p, -1), o)
    first_second = {}
    for p, o, _ in second.consumed():
        first_second.setdefault(p, o)
    for p, o in first_second.items():
        assert o == last_first.get(p, -1) + 1, f"partition {p} resumed at {o}"


def test_cooperative_sticky_incremental_rebalance(broker_factory, members):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "coop", 12)
    extra = {"partition.assignment.strategy": "cooperative-sticky"}
    ms = [Member(broker, "g-coop", "coop", extra=extra) for _ in range(2)]
    members.extend(ms)
    wait_for(lambda: split_covers(ms, 12), 60, "two members share 12")
    before = [set(m.owned()) for m in ms]
    seen = [len(m.revocations) for m in ms]
    ms.append(Member(broker, "g-coop", "coop", extra=extra))
    members.append(ms[-1])
    wait_for(lambda: split_covers(ms, 12), 60, "three members share 12")
    for m, had, n in zip(ms[:2], before, seen):
        # Incremental: a member gives up some partitions and keeps the rest throughout.
        for revoked in m.revocations[n:]:
            assert set(revoked) < had, f"revoked {revoked} of {sorted(had)}: not incremental"
        assert set(m.owned()) <= had, "sticky: an old member gained partitions it did not have"


def test_static_member_restart_keeps_its_partitions(broker_factory, members):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "static", 6)
    conf = lambda inst: {"group.instance.id": inst, "session.timeout.ms": 20000}
    a = Member(broker, "g-static", "static", extra=conf("a"))
    b = Member(broker, "g-static", "static", extra=conf("b"))
    members.extend([a, b])
    wait_for(lambda: split_covers([a, b], 6), 60, "initial assignment")
    owned_b = b.owned()
    revocations_a = len(a.revocations)
    b.kill()
    b2 = Member(broker, "g-static", "static", extra=conf("b"))
    members.append(b2)
    wait_for(lambda: b2.owned() == owned_b, 30, "the restarted static member gets its partitions back")
    time.sleep(2)
    assert len(a.revocations) == revocations_a, "the other member went through a rebalance"


def test_lag_and_commit_metadata_are_visible(broker_factory):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "lag", 2)
    produce(broker, "lag", [f"l{i}" for i in range(100)], partitions=2)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-lag", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("lag", 0), TopicPartition("lag", 1)])
        c.commit(offsets=[TopicPartition("lag", 0, 10, metadata="hello"), TopicPartition("lag", 1, 20)],
                 asynchronous=False)
        got = {tp.partition: tp for tp in c.committed([TopicPartition("lag", 0), TopicPartition("lag", 1)], timeout=10)}
        assert (got[0].offset, got[0].metadata) == (10, "hello")
        assert got[1].offset == 20
        lag = {p: c.get_watermark_offsets(TopicPartition("lag", p), timeout=10)[1] - got[p].offset for p in (0, 1)}
        assert lag == {0: 40, 1: 30}
    finally:
        c.close()
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    groups = a.list_consumer_groups().result(timeout=10)
    assert "g-lag" in {g.group_id for g in groups.valid}
    desc = a.describe_consumer_groups(["g-lag"])["g-lag"].result(timeout=10)
    assert desc.group_id == "g-lag" and desc.members == []


def test_group_bad_input_gets_kafka_errors_and_the_group_stays_usable(broker_factory, members):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "strict", 2)
    m = Member(broker, "g-strict", "strict")
    members.append(m)
    wait_for(lambda: m.owned() == [0, 1], 60, "assignment")

    def offset_commit(generation, member, topic, partition):
        body = kwire.kstring("g-strict") + struct.pack(">i", generation) + kwire.kstring(member)
        body += struct.pack(">q", -1) + struct.pack(">i", 1) + kwire.kstring(topic)
        body += struct.pack(">i", 1) + struct.pack(">iq", partition, 5) + kwire.kstring("")
        with Conn(broker.bootstrap) as c:
            r = c.call(OFFSET_COMMIT, 2, body)
            ((_, parts),) = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
            return parts[0][1]

    assert offset_commit(1, "ghost", "strict", 0) == UNKNOWN_MEMBER_ID
    # A simple (generation -1) commit into a group with live members is refused too.
    assert offset_commit(-1, "", "strict", 0) == UNKNOWN_MEMBER_ID
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-solo", "enable.auto.commit": False})
    try:
        res = c.commit(offsets=[TopicPartition("strict", 7, 1)], asynchronous=False)
        assert res[0].error is not None and res[0].error.code() == kwire.UNKNOWN_TOPIC_OR_PARTITION
    except Exception as e:  # librdkafka may raise for a partition-level error instead
        assert "UNKNOWN_TOPIC_OR_PART" in str(e) or "Unknown topic or partition" in str(e), e
    finally:
        c.close()
    produce(broker, "strict", [f"s{i}" for i in range(10)], partitions=2)
    wait_for(lambda: len(m.consumed()) >= 10, 30, "the group still consumes")


def test_oversized_commit_metadata_is_refused(broker_factory):
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "meta", 1)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-meta", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("meta", 0)])
        try:
            res = c.commit(offsets=[TopicPartition("meta", 0, 1, metadata="m" * 5000)], asynchronous=False)
            err = res[0].error
        except Exception as e:  # librdkafka may raise the partition error
            err = e.args[0]
        assert err is not None and err.code() == 12, err  # OFFSET_METADATA_TOO_LARGE
        c.commit(offsets=[TopicPartition("meta", 0, 1, metadata="small")], asynchronous=False)
        (tp,) = c.committed([TopicPartition("meta", 0)], timeout=10)
        assert (tp.offset, tp.metadata) == (1, "small")
    finally:
        c.close()
