"""Clock jumps and time-based retention (issue 22, item 8), with libfaketime (Debian `faketime`).

A topic with `retention.ms` = 10 min and 64 KiB segments holds records stamped 7 min ago
("old") followed by records stamped now ("new"); at the real clock nothing is past retention.
The broker is SIGKILLed and restarted with its clock jumped (LD_PRELOAD=libfaketime, FAKETIME;
the monotonic clock is left alone), retention checked every 200 ms:

- +5 min: the old records are 12 min old, the new ones 5 min. Retention deletes exactly the
  sealed segments holding only old records (their newest timestamp is past retention), never the
  active one; the log start moves to a segment boundary; every record above it is intact and in
  order; ListOffsets by time still answers; appends continue at the right offsets.
- +1 day: every sealed segment is past retention and deleted; the active segment stays, whole.
- -1 day: nothing is deleted; appends keep working (offsets contiguous, segments roll).
- back to the real clock: nothing recent is deleted.
"""

import glob
import re
import time
from datetime import datetime, timezone

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from chaos import Cycles, create_topic, partition_dir, read_partition, segment_bases
from values import parse, value

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 2
RETENTION_MS = 10 * 60_000
SEGMENT_BYTES = 64 * 1024
VALUE_BYTES = 1000
RETENTION_CHECK_MS = 200


def libfaketime():
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


class Book:
    """What was produced: per partition, offset -> (seq, timestamp ms)."""

    def __init__(self):
        self.at = {p: {} for p in range(PARTITIONS)}
        self.next_seq = {p: 0 for p in range(PARTITIONS)}

    def produce(self, broker, n, ts_ms):
        """n records per partition; timestamps ts_ms, ts_ms + 1, ... (None: the client's clock)."""
        p_ = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2,
                       "batch.num.messages": 8, "enable.idempotence": True})
        errors, acked = [], []

        def on_delivery(err, msg, seq):
            if err is not None:
                errors.append(err)
            else:
                acked.append((msg.partition(), msg.offset(), seq, msg.timestamp()[1]))

        for i in range(n):
            for p in range(PARTITIONS):
                seq = self.next_seq[p]
                self.next_seq[p] += 1
                kw = {} if ts_ms is None else {"timestamp": ts_ms + i}
                p_.produce("aging", value=value(p, seq, VALUE_BYTES), partition=p,
                           on_delivery=lambda e, m, s=seq: on_delivery(e, m, s), **kw)
            if i % 50 == 0:
                p_.poll(0)
        assert p_.flush(60) == 0 and not errors, errors[:3]
        for p, off, seq, ts in acked:
            assert off not in self.at[p], f"offset {off} of partition {p} acknowledged twice"
            self.at[p][off] = (seq, ts)
        return acked

    def end(self, p):
        return max(self.at[p]) + 1


def offsets(broker):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "chaos-watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition("aging", p), timeout=10) for p in range(PARTITIONS)}
    finally:
        c.close()


def start_at(broker, shift, cycles):
    """Starts the broker with its wall clock shifted by `shift` (a FAKETIME offset such as
    "+5m", "-1d"; None: the real clock) and checks that the shift took effect; files the
    restart time in `cycles`."""
    for k in ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"):
        broker.env.pop(k, None)
    if shift:
        broker.env.update({"LD_PRELOAD": libfaketime(), "FAKETIME": shift,
                           "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    before = len(broker.log)
    broker.start()
    cycles.ready_s.append(broker.ready_at - broker.spawned_at)
    # The broker's own log lines carry its clock.
    deadline = time.monotonic() + 10
    while True:
        m = re.search(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z .*strom starting", broker.log[before:], re.M)
        if m:
            break
        assert time.monotonic() < deadline, f"no start line in the log:\n{broker.log[before:][-2000:]}"
        time.sleep(0.05)
    seen = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc).timestamp()
    want = {None: 0, "+5m": 300, "+1d": 86400, "-1d": -86400}[shift]
    assert abs(seen - time.time() - want) < 60, f"the broker's clock is off by {seen - time.time():.0f}s, not {want}s"


def wait_stable_start(broker, want, what):
    """Waits until every partition's log start is `want[p]`, then checks it stays there for ten
    more retention passes."""
    deadline = time.monotonic() + 15
    while True:
        got = {p: lo for p, (lo, _hi) in offsets(broker).items()}
        if got == want:
            break
        assert time.monotonic() < deadline, f"{what}: log start {got}, expected {want}"
        time.sleep(0.1)
    time.sleep(10 * RETENTION_CHECK_MS / 1000)
    got = {p: lo for p, (lo, _hi) in offsets(broker).items()}
    assert got == want, f"{what}: log start moved on to {got} (expected to stay at {want})"


def check_records(broker, book, starts, what):
    """Every record from the log start to the end is the one acknowledged at that offset."""
    for p in range(PARTITIONS):
        recs, err = read_partition(broker.bootstrap, "aging", p, 60)
        assert "error" not in err.lower(), f"{what}: kcat: {err}"
        offs = [o for o, _t, _v in recs]
        assert offs == list(range(starts[p], book.end(p))), (
            f"{what}: partition {p} holds offsets {offs[:3]}..{offs[-3:]}, expected {starts[p]}..{book.end(p) - 1}")
        for o, ts, v in recs:
            seq, want_ts = book.at[p][o]
            assert parse(v, VALUE_BYTES) == (p, seq), f"{what}: partition {p} offset {o}: {v[:30]!r}, expected seq {seq}"
            assert ts == want_ts, f"{what}: partition {p} offset {o}: timestamp {ts}, acknowledged {want_ts}"


def segments_max_ts(broker, book):
    """Per partition: [(base, newest timestamp of its records)] of the segments on disk."""
    out = {}
    for p in range(PARTITIONS):
        bases = segment_bases(partition_dir(broker, "aging", p))
        ends = bases[1:] + [book.end(p)]
        out[p] = [(b, max(book.at[p][o][1] for o in range(b, e))) for b, e in zip(bases, ends) if e > b]
    return out


def test_clock_jumps_and_time_retention(broker_factory, chaos_report):
    lib = libfaketime()
    if lib is None:
        pytest.skip("libfaketime not installed (Debian package faketime; scripts/setup installs it)")
    b = broker_factory(http_addr="off", retention_check_interval_ms=RETENTION_CHECK_MS)
    # The broker's clock goes back a day below while the producers' does not: their records are
    # then a day "in the future", which Kafka 4's default message.timestamp.after.max.ms (1 h)
    # refuses as INVALID_TIMESTAMP. This test is about retention under clock jumps, so the
    # topic accepts any future timestamp.
    create_topic(b, "aging", PARTITIONS, {"retention.ms": str(RETENTION_MS),
                                          "segment.bytes": str(SEGMENT_BYTES),
                                          "message.timestamp.after.max.ms": str(2**63 - 1)})
    book = Book()
    cycles = chaos_report["cycles"] = Cycles()
    now = int(time.time() * 1000)
    book.produce(b, 300, now - 7 * 60_000)  # ~5 segments per partition of old records
    new_ts = int(time.time() * 1000)
    book.produce(b, 300, new_ts)            # ~5 of new ones
    zero = {p: 0 for p in range(PARTITIONS)}
    wait_stable_start(b, zero, "real clock")  # nothing is past retention yet

    # +5 min: the old records are 12 min old, the new ones 5 min.
    b.kill()
    segs = segments_max_ts(b, book)
    expect = {}
    for p, ss in segs.items():
        assert len(ss) >= 6, f"partition {p}: too few segments to test retention: {ss}"
        # The sealed segments holding only old records go; the first holding a new one stays.
        expect[p] = next((base for base, ts in ss[:-1] if ts >= new_ts), ss[-1][0])
        assert 0 < expect[p] < ss[-1][0], f"partition {p}: the records do not straddle segments: {ss}"
    print(f"+5 min: segments (base, newest ms - new) {[[(x, t - new_ts) for x, t in ss] for ss in segs.values()]}; "
          f"log start expected {expect}")
    start_at(b, "+5m", cycles)
    wait_stable_start(b, expect, "clock +5 min")
    for p in range(PARTITIONS):
        left = segment_bases(partition_dir(b, "aging", p))
        assert left == [base for base, _ts in segs[p] if base >= expect[p]], f"partition {p}: files {left}"
    check_records(b, book, expect, "clock +5 min")
    # ListOffsets by time: the oldest timestamp answers the log start; a new one its own offset.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "chaos-lookups"})
    try:
        for p in range(PARTITIONS):
            first_new = min(o for o, (_s, ts) in book.at[p].items() if ts >= new_ts + 100)
            got = c.offsets_for_times([TopicPartition("aging", p, now - 7 * 60_000)], timeout=10)[0]
            assert got.offset == expect[p], f"partition {p}: ListOffsets(oldest) = {got.offset}"
            got = c.offsets_for_times([TopicPartition("aging", p, new_ts + 100)], timeout=10)[0]
            assert got.offset == first_new, f"partition {p}: ListOffsets(new) = {got.offset}, expected {first_new}"
    finally:
        c.close()
    ends = {p: book.end(p) for p in range(PARTITIONS)}
    acked = book.produce(b, 50, None)  # appends continue where the log ended
    for p in range(PARTITIONS):
        assert sorted(o for q, o, _s, _t in acked if q == p) == list(range(ends[p], ends[p] + 50))

    # +1 day: every sealed segment is past retention; the active one stays, whole.
    b.kill()
    segs = segments_max_ts(b, book)
    start_at(b, "+1d", cycles)
    active = {p: ss[-1][0] for p, ss in segs.items()}
    print(f"+1 day: segments {[[x for x, _t in ss] for ss in segs.values()]}; log start expected {active}")
    wait_stable_start(b, active, "clock +1 day")
    check_records(b, book, active, "clock +1 day")

    # -1 day: nothing is deleted; appends keep working and roll segments.
    b.kill()
    start_at(b, "-1d", cycles)
    before = {p: len(segment_bases(partition_dir(b, "aging", p))) for p in range(PARTITIONS)}
    ends = {p: book.end(p) for p in range(PARTITIONS)}
    acked = book.produce(b, 200, None)
    for p in range(PARTITIONS):
        assert sorted(o for q, o, _s, _t in acked if q == p) == list(range(ends[p], ends[p] + 200))
        assert len(segment_bases(partition_dir(b, "aging", p))) > before[p], "no segment rolled"
    wait_stable_start(b, active, "clock -1 day")
    check_records(b, book, active, "clock -1 day")

    # Back to the real clock: what was just written is recent and stays.
    b.kill()
    start_at(b, None, cycles)
    wait_stable_start(b, active, "real clock again")
    check_records(b, book, active, "real clock again")
