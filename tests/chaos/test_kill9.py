"""kill -9 cycles under an acks=all idempotent load (issue 22, item 8).

An idempotent confluent-kafka producer in its own process (load_producer.py) writes
sequence-numbered values round-robin to the partitions of a topic while the broker is SIGKILLed
and restarted CHAOS_CYCLES times on the same data dir; the producer stays up (librdkafka
reconnects and retries; the broker must deduplicate retries of batches it had appended before
the kill). Then everything is read back with kcat and checked: every acknowledged record is
stored exactly once, at its acknowledged offset, in order per partition; unacknowledged records
appear at most once; nothing that was never sent appears; offsets are contiguous.

For the broker's default flush policy (the OS flushes: kill -9 keeps the page cache, so even
that must lose nothing acknowledged), for `flush.messages=1`, and with 1 MiB segments so that
segments roll (and producer snapshots are written) while the kills happen.
"""

import random
import time

import pytest

from chaos import (CYCLES, Load, assert_load_clean, check_topic, create_topic, failure_text,
                   kill_cycles, partition_dir, seed, segment_bases)

pytestmark = pytest.mark.timeout(120 + 12 * CYCLES)

MIB = 1 << 20
VARIANTS = {
    "default-flush": {},
    "default-flush-1MiB-segments": {"segment.bytes": str(MIB)},
    "flush-every-message-1MiB-segments": {"flush.messages": "1", "segment.bytes": str(MIB)},
}
PARTITIONS = 4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kill9_cycles_lose_nothing_acknowledged(broker_factory, workdir, chaos_report, variant):
    s = seed()
    rng = random.Random(s)
    b = broker_factory(http_addr="off")
    create_topic(b, "load", PARTITIONS, VARIANTS[variant])
    small = "segment.bytes" in VARIANTS[variant]
    load = Load(workdir, b.bootstrap, "load", PARTITIONS, value_bytes=400 if small else 100).start()
    try:
        cycles = kill_cycles(b, load, CYCLES, rng)
        chaos_report["cycles"] = cycles
        code = load.finish()
        check = check_topic(b, load)
        chaos_report["check"] = check
        chaos_report["seed"] = s
        segments = {p: len(segment_bases(partition_dir(b, "load", p))) for p in range(PARTITIONS)}
        chaos_report["segments"] = segments
        print(f"{variant}: {check.counts()}, segments {segments}, seed {s}")
        assert check.problems() == 0, failure_text(check, load, cycles, s)
        assert_load_clean(load, code)
        assert check.acked > 0 and check.stored >= check.acked
        if small:
            assert max(segments.values()) >= 2, f"no segment rolled: {segments}"
    finally:
        load.kill()


def test_kill_between_roll_and_seal_keeps_lookups_by_time(broker_factory):
    """A kill after a roll but before the sealed segment's background sync leaves the recovery
    point at that segment (the file moves only after the sync), so the next start checks it
    again and rewrites its indexes. Its time index must still end with the segment's newest
    timestamp (the entry the roll wrote): on any later start that entry is the segment's max
    timestamp, which ListOffsets by time (and retention) go by."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    b = broker_factory(http_addr="off")
    create_topic(b, "rolled", 1, {"segment.bytes": str(MIB)})
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.num.messages": 20})
    n, t0 = 10_000, int(time.time() * 1000) - 100_000
    for i in range(n):
        p.produce("rolled", value=b"%08d" % i + b"x" * 292, timestamp=t0 + i)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    pdir = partition_dir(b, "rolled", 0)
    point = pdir / "recovery-point"
    deadline = time.monotonic() + 20
    while not (point.exists() and int(point.read_text()) >= segment_bases(pdir)[-1]):
        assert time.monotonic() < deadline, "the sealed segments were never synced"
        time.sleep(0.05)
    b.kill()
    bases = segment_bases(pdir)
    assert len(bases) >= 3, bases
    # The state a kill leaves between the roll to the last segment and the previous one's sync.
    point.write_text(f"{bases[-2]}\n")
    b.start()  # checks segment bases[-2] again
    b.kill()
    b.start()  # trusts it: below the recovery point
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "chaos-lookups"})
    try:
        wrong = []
        for k in range(bases[-1] - 60, bases[-1]):  # the newest records of the rechecked segment
            tp = c.offsets_for_times([TopicPartition("rolled", 0, t0 + k)], timeout=20)[0]
            if tp.offset != k:
                wrong.append((k, tp.offset))
    finally:
        c.close()
    assert not wrong, (f"segments {bases}, rechecked {bases[-2]}: ListOffsets by time for record k's "
                       f"timestamp answered (k, offset) {wrong[:4]} ({len(wrong)} of 60 wrong)")
