"""Log compaction (issue 14, part 5), over a real `strom serve` with confluent-kafka.

- a compacted topic with small segments gets many updates per key; the cleaner runs; a consumer
  from the beginning sees exactly the last value of each key, at the offset it was produced
  with (offsets strictly increasing, with gaps);
- a tombstone stays for delete.retention.ms after its clean, then disappears;
- a keyless record produced to a compacted topic is INVALID_RECORD, nothing of its batch stored;
- kill -9 of the broker in the middle of a cleaner pass: after restart the log is whole (every
  key's last value there, offsets intact) and compaction completes;
- the committed offsets store (`.strom/groups/`) stays bounded over many commits and restarts.
"""

import time
import urllib.request

import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                  ResourceType)

import kwire

pytestmark = pytest.mark.timeout(240)

SMALL = {"cleanup.policy": "compact", "segment.bytes": "4096", "segment.ms": "300",
         "min.cleanable.dirty.ratio": "0.01"}


def create(broker, name, config):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(name, 1, 1, config=config)], operation_timeout=10)[name].result(timeout=20)


def produce(broker, topic, records, **conf):
    """Produces (key, value) pairs one by one; returns the offset of each, in order."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                  "batch.size": 2000, **conf})
    offsets = []
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets.append(msg.offset())

    for k, v in records:
        p.produce(topic, key=k, value=v, on_delivery=done)
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors
    return offsets


def read_all(broker, topic, timeout_s=30):
    """Every record of partition 0, from the start to the high watermark: (offset, key, value)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compaction-reader",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100, "enable.partition.eof": True})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        out = []
        if hi == 0:
            return out, hi
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while True:
            assert time.monotonic() < deadline, f"read {len(out)} records up to {out[-1:] } of {hi}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if m.offset() >= hi:
                        return out, hi
                    continue
                raise KafkaException(m.error())
            out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def metric(broker, name):
    with urllib.request.urlopen(f"{broker.http}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def roll(broker, topic):
    """Seals the active segment (segment.ms=300): waits, then appends a sentinel record."""
    time.sleep(0.5)
    return produce(broker, topic, [(b"sentinel", b"roll")])[0]


def stored(offsets, recs):
    """(offset, key, value) of each record `produce` wrote, in order."""
    return [(o, k, v) for o, (k, v) in zip(offsets, recs)]


def last_values(written):
    last = {}
    for off, k, v in written:
        last[k] = (off, k, v)
    return sorted(last.values())


def wait_compacted(broker, topic, expected, timeout_s=60):
    """Reads until the records below the sentinels equal `expected`; returns what was read."""
    deadline = time.monotonic() + timeout_s
    while True:
        got, _ = read_all(broker, topic)
        body = [r for r in got if r[1] != b"sentinel"]
        if body == expected:
            return got
        assert time.monotonic() < deadline, f"not compacted: {len(body)} records, want {len(expected)}"
        time.sleep(0.3)


def updates(keys, rounds, tag=""):
    return [(f"key-{k}".encode(), f"value-{k}-{r}{tag}-{'x' * 30}".encode())
            for r in range(rounds) for k in range(keys)]


def test_compaction_keeps_the_last_value_per_key_at_its_offset(broker_factory):
    b = broker_factory(http=True, log_cleaner_backoff_ms=100)
    create(b, "prices", SMALL)
    recs = updates(20, 40)
    offsets = produce(b, "prices", recs)
    written = stored(offsets, recs)
    roll(b, "prices")
    got = wait_compacted(b, "prices", last_values(written))
    offs = [r[0] for r in got]
    assert offs == sorted(set(offs)), "offsets strictly increasing"
    assert len(got) < offs[-1] + 1, "gaps where records were compacted away"
    # Each key's value is the one produced last, at the offset its produce was acknowledged with.
    assert len([r for r in got if r[1] != b"sentinel"]) == 20
    assert metric(b, "strom_log_cleaner_passes_total") >= 1
    assert metric(b, "strom_log_cleaner_records_removed_total") >= 20 * 39
    assert metric(b, 'strom_log_cleaner_dirty_ratio') is not None
    # New updates after compaction: compacted again, offsets go on.
    recs2 = updates(20, 5, tag="-second")
    offsets2 = produce(b, "prices", recs2)
    assert offsets2[0] > offs[-1]
    written += stored(offsets2, recs2)
    roll(b, "prices")
    # The first sentinel is compacted away by the second one (same key).
    got = wait_compacted(b, "prices", last_values([w for w in written]))
    # A restart keeps the compacted log as it is.
    b.restart()
    again, _ = read_all(b, "prices")
    assert again == got


def test_tombstones_disappear_after_delete_retention(broker_factory):
    b = broker_factory(http=True, log_cleaner_backoff_ms=100)
    create(b, "users", {**SMALL, "delete.retention.ms": "3000"})
    recs = updates(5, 10)
    offsets = produce(b, "users", recs)
    written = stored(offsets, recs)
    tomb = produce(b, "users", [(b"key-1", None)])[0]
    written.append((tomb, b"key-1", None))
    roll(b, "users")
    # The tombstone replaces key-1's values and stays for now.
    got = wait_compacted(b, "users", last_values(written))
    assert (tomb, b"key-1", None) in got
    cleaned_at = time.monotonic()
    # After delete.retention.ms, the next pass (more updates make the log dirty) removes it.
    deadline = time.monotonic() + 60
    while True:
        more = updates(1, 3, tag=f"-{time.monotonic()}")  # key-0 only
        produce(b, "users", more)
        roll(b, "users")
        time.sleep(0.5)
        got, _ = read_all(b, "users")
        if not any(r[1] == b"key-1" for r in got):
            break
        assert time.monotonic() < deadline, "the tombstone was never removed"
    assert time.monotonic() - cleaned_at >= 3.0, "removed before delete.retention.ms"
    keys = {r[1] for r in got}
    assert {b"key-0", b"key-2", b"key-3", b"key-4"} <= keys


def test_keyless_record_to_a_compacted_topic_is_invalid_record(broker_factory):
    b = broker_factory(http=True)
    create(b, "keyed", {"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0,
                  "message.send.max.retries": 0})
    errors = []
    p.produce("keyed", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(20) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
    # Nothing stored; keyed records are accepted.
    got, hi = read_all(b, "keyed")
    assert hi == 0 and got == []
    assert produce(b, "keyed", [(b"k", b"v")]) == [0]
    # A compact,delete topic refuses it too; a delete topic takes it.
    create(b, "both", {"cleanup.policy": "compact,delete"})
    errors.clear()
    p.produce("both", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD
    create(b, "plain", {})
    assert produce(b, "plain", [(None, b"fine")]) == [0]
    # The HTTP door: 400 invalid_record, nothing stored.
    r = requests.post(f"{b.http}/topics/keyed/records", json={"records": [{"key": "a", "value": "x"}, {"value": "y"}]},
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_record", r.text
    got, hi = read_all(b, "keyed")
    assert hi == 1


def test_keyless_record_gets_a_kip467_record_error_over_the_wire(broker_factory):
    """Produce v8 of one batch [keyed, keyless, keyed] to a compacted topic: INVALID_RECORD
    naming record 1 alone (KIP-467 record_errors), and nothing of the batch is stored."""
    b = broker_factory()
    with kwire.Conn(b.bootstrap) as c:
        assert c.create_topic("kip467-compact", configs={"cleanup.policy": "compact"}) == kwire.NONE
        batch = kwire.batch_of(kwire.record(0, b"a", key=b"k0") + kwire.record(1, b"b")
                               + kwire.record(2, b"c", key=b"k2"), 3)
        p = c.produce_partition("kip467-compact", 0, batch, version=8)
        assert p["error_code"] == kwire.INVALID_RECORD
        assert [i for i, _ in p["record_errors"]] == [1], p["record_errors"]
        assert "key" in p["record_errors"][0][1], p["record_errors"]
        assert c.fetch("kip467-compact", 0, 0)[1] == 0, "nothing written"


def alter(broker, topic, name, value):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(20)


def body_count(broker, topic):
    got, _ = read_all(broker, topic)
    return len([r for r in got if r[1] != b"sentinel"])


def cleaner_ran(b):
    """A topic of its own compacted from scratch: proof that the cleaner has made passes
    since (the negative checks below wait for it, not for a fixed time)."""
    name = f"control-{time.monotonic_ns()}"
    create(b, name, SMALL)
    recs = updates(3, 5)
    offsets = produce(b, name, recs)
    roll(b, name)
    wait_compacted(b, name, last_values(stored(offsets, recs)))


def test_compaction_lags_and_the_dirty_ratio(broker_factory):
    b = broker_factory(http=True, log_cleaner_backoff_ms=100)
    # min.compaction.lag.ms: records younger than it stay, however dirty the log is.
    create(b, "lagged", {**SMALL, "min.compaction.lag.ms": "3600000"})
    recs = updates(10, 20)
    offsets = produce(b, "lagged", recs)
    written = stored(offsets, recs)
    roll(b, "lagged")
    cleaner_ran(b)
    assert body_count(b, "lagged") == 200, "nothing compacted within min.compaction.lag.ms"
    alter(b, "lagged", "min.compaction.lag.ms", "0")
    wait_compacted(b, "lagged", last_values(written))
    # min.cleanable.dirty.ratio: once clean, a little dirt below the ratio waits...
    create(b, "ratio", SMALL)
    recs = updates(20, 3)
    offsets = produce(b, "ratio", recs)
    written = stored(offsets, recs)
    roll(b, "ratio")
    wait_compacted(b, "ratio", last_values(written))
    alter(b, "ratio", "min.cleanable.dirty.ratio", "0.9")
    more = updates(2, 2, tag="-more")
    offsets = produce(b, "ratio", more)
    written += stored(offsets, more)
    roll(b, "ratio")
    cleaner_ran(b)
    assert body_count(b, "ratio") == 20 + 4, "dirty ratio under 0.9: not cleaned"
    # ...until max.compaction.lag.ms makes the oldest dirty record due.
    alter(b, "ratio", "max.compaction.lag.ms", "1")
    wait_compacted(b, "ratio", last_values(written))


def test_bad_compaction_configs_are_invalid_config(broker_factory):
    b = broker_factory()
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    for config in [{"cleanup.policy": "compacted"}, {"min.cleanable.dirty.ratio": "2"},
                   {"delete.retention.ms": "-5"},
                   {"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"}]:
        f = a.create_topics([NewTopic("bad", 1, 1, config=config)], operation_timeout=10)["bad"]
        with pytest.raises(KafkaException) as e:
            f.result(timeout=20)
        assert e.value.args[0].code() == KafkaError.INVALID_CONFIG, config


def segments_bytes(b, topic):
    return sum(f.stat().st_size for f in (b.data_dir / f"{topic}-0").glob("*.log"))


def test_kill_9_in_the_middle_of_a_clean_leaves_the_log_whole(broker_factory):
    b = broker_factory(http=True, log_cleaner_backoff_ms=100, env={"STROM_TEST_CLEANER_PAUSE_MS": "400"})
    # Written as a delete topic, then switched to compact: one pass covers every segment.
    create(b, "orders", {**SMALL, "cleanup.policy": "delete"})
    recs = updates(30, 40)
    offsets = produce(b, "orders", recs)
    written = stored(offsets, recs)
    end = roll(b, "orders") + 1
    before = segments_bytes(b, "orders")
    segments = len(list((b.data_dir / "orders-0").glob("*.log")))
    assert segments > 10
    alter(b, "orders", "cleanup.policy", "compact")
    # Wait until some segments are rewritten while the pass is still running, then crash.
    deadline = time.monotonic() + 60
    while segments_bytes(b, "orders") > before * 0.8:
        assert time.monotonic() < deadline, "the cleaner did not start"
        time.sleep(0.1)
    assert metric(b, "strom_log_cleaner_passes_total") == 0, "the pass ended before the kill"
    b.kill()
    # Restart without the pause: the log is whole, then compaction completes.
    del b.env["STROM_TEST_CLEANER_PAUSE_MS"]
    killed_at = time.time()
    b.start()
    got, hi = read_all(b, "orders")
    assert hi == end
    offs = [r[0] for r in got]
    assert offs == sorted(set(offs))
    by_offset = {o: (k, v) for o, k, v in written}
    for o, k, v in got:
        if k != b"sentinel":
            assert by_offset[o] == (k, v), f"record at {o} is not what was produced there"
    for last in last_values(written):
        assert last in got, f"lost {last}"
    wait_compacted(b, "orders", last_values(written))
    # No swap file from before the kill survived the start (a later pass may write new ones).
    pdir = b.data_dir / "orders-0"
    left = [f for f in [*pdir.glob("*.cleaned"), *pdir.glob("*.swap")] if f.stat().st_mtime < killed_at]
    assert not left, left


def test_committed_offsets_store_stays_bounded(broker_factory):
    b = broker_factory(log_cleaner_backoff_ms=100, offsets_topic_segment_bytes=8192)
    create(b, "events", {})
    produce(b, "events", [(None, b"x")])
    groups_dir = b.data_dir / ".strom" / "groups"

    def store_bytes():
        return sum(f.stat().st_size for f in groups_dir.glob("*.log"))

    last = None
    for round_no in range(3):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "committer",
                      "enable.auto.commit": False})
        try:
            for i in range(1500):
                last = round_no * 10_000 + i
                c.commit(offsets=[TopicPartition("events", 0, last)], asynchronous=False)
        finally:
            c.close()
        b.restart()
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "committer"})
        try:
            committed = c.committed([TopicPartition("events", 0)], timeout=10)
            assert committed[0].offset == last
        finally:
            c.close()
    # 4500 commits of ~100 bytes each would be ~450 kB uncompacted; the cleaner keeps a few
    # segments' worth.
    deadline = time.monotonic() + 30
    while store_bytes() > 64 * 1024:
        assert time.monotonic() < deadline, f"groups store is {store_bytes()} bytes"
        time.sleep(0.3)
