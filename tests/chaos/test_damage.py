"""Damaged files between kill -9 cycles (issue 22, item 8), under the idempotent load of
test_kill9.py.

- Torn and corrupted segment tails: while the broker is down, the end of each partition's active
  segment gets random garbage, zeros, a partial batch, a stale copy of a whole batch, or flipped
  bytes after the last acknowledged batch. The next start must truncate them and lose nothing
  acknowledged.
- Damaged index files (`.index`, `.timeindex`: garbage, truncated, zero-length, extended,
  deleted) of sealed and active segments and damaged producer snapshots (`*.snapshot`: garbage,
  truncated): the broker starts, rebuilds what it needs, the producer's retries are still
  deduplicated (no duplicate in the final check), and ListOffsets by timestamp still answers
  what Kafka would (checked against the records read back at the end).
"""

import random
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from chaos import (CYCLES, INDEX_MODES, TAIL_MODES, Load, assert_load_clean, check_topic,
                   create_topic, damage_file, damage_tail, expected_offset_for_time, failure_text,
                   kill_cycles, partition_dir, seed, seg_path, segment_bases)

pytestmark = pytest.mark.timeout(120 + 12 * CYCLES)

MIB = 1 << 20
PARTITIONS = 3


def run_damaged(broker_factory, workdir, chaos_report, topic, damage_fn, after_restart=None,
                config=None):
    s = seed()
    rng = random.Random(s)
    b = broker_factory(http_addr="off")
    create_topic(b, topic, PARTITIONS, config or {"segment.bytes": str(MIB)})
    load = Load(workdir, b.bootstrap, topic, PARTITIONS, value_bytes=300).start()
    try:
        cycles = kill_cycles(b, load, CYCLES, rng, damage=lambda c: damage_fn(b, load, rng, c),
                             after_restart=after_restart and (lambda c, cy: after_restart(b, rng, c, cy)))
        chaos_report["cycles"] = cycles
        chaos_report["seed"] = s
        code = load.finish()
        check = check_topic(b, load)
        chaos_report["check"] = check
        text = failure_text(check, load, cycles, s)
        if cycles.late_acks:
            text += (f"\nharness: {len(cycles.late_acks)} acks of the killed broker were reported after "
                     f"the damage was chosen (e.g. {cycles.late_acks[:3]}): damage may have hit them")
        print(f"{topic}: {check.counts()}, seed {s}")
        for c, d in cycles.damage:
            print(f"  cycle {c}: {d}")
        assert check.problems() == 0, text
        assert_load_clean(load, code)
        assert check.acked > 0
        return b, load, check, cycles
    finally:
        load.kill()


def test_torn_and_corrupted_tails_are_truncated(broker_factory, workdir, chaos_report):
    def damage(b, load, rng, cycle):
        done = []
        for p in range(PARTITIONS):
            mode = TAIL_MODES[(cycle + p) % len(TAIL_MODES)]
            pdir = partition_dir(b, load.topic, p)
            done.append(f"p{p} {damage_tail(rng, pdir, load.max_acked_offset(p), mode)}")
        return "; ".join(done)

    b, *_ = run_damaged(broker_factory, workdir, chaos_report, "tails", damage)
    assert "truncating torn or corrupt log tail" in b.log


SNAPSHOT_MODES = ("garbage", "truncated")


def test_damaged_indexes_and_snapshots_are_rebuilt(broker_factory, workdir, chaos_report):
    """Every cycle damages, in every partition, both indexes of a random sealed segment and of
    the active one (a different mode each) and the newest producer snapshot (sometimes both)."""
    # (partition, target timestamp, offset answered or None, cycle, log end before, log end after)
    lookups = []
    load_start_ms = int(time.time() * 1000)

    def damage(b, load, rng, cycle):
        done = []
        for p in range(PARTITIONS):
            pdir = partition_dir(b, load.topic, p)
            bases = segment_bases(pdir)
            chosen = [bases[-1]] + ([rng.choice(bases[:-1])] if len(bases) > 1 else [])
            for i, base in enumerate(chosen):
                for j, ext in enumerate(("index", "timeindex")):
                    mode = INDEX_MODES[(cycle + p + 2 * i + j) % len(INDEX_MODES)]
                    done.append(f"p{p} {damage_file(rng, seg_path(pdir, base, ext), mode)}")
            snaps = sorted(pdir.glob("*.snapshot"))
            for k, snap in enumerate(reversed(snaps[-2:] if cycle % 3 == 2 else snaps[-1:])):
                done.append(f"p{p} {damage_file(rng, snap, SNAPSHOT_MODES[(cycle + k) % 2])}")
        return "; ".join(done)

    def log_ends(c):
        return [c.get_watermark_offsets(TopicPartition("idx", p), timeout=20, cached=False)[1]
                for p in range(PARTITIONS)]

    def after_restart(b, rng, cycle, cycles):
        # Targets from the load's start to a second before the kill. A record's timestamp is
        # taken when the client queues it, so one stamped before the kill may still be stored
        # only after the lookup (the client retries it after the restart): each lookup is
        # bracketed by the partition's log end, read just before and just after it.
        hi = cycles.kill_wall_ms[-1] - 1000
        if hi <= load_start_ms:
            return
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "chaos-lookups"})
        try:
            for _ in range(3):  # one partition at most once per request: answers go by partition
                targets = [TopicPartition("idx", p, rng.randint(load_start_ms, hi)) for p in range(PARTITIONS)]
                before = log_ends(c)
                got = c.offsets_for_times(targets, timeout=20)
                after = log_ends(c)
                for want, tp in zip(targets, got):
                    assert tp.error is None, f"ListOffsets by time failed after cycle {cycle}: {tp.error}"
                    p = tp.partition
                    lookups.append((p, want.offset, tp.offset if tp.offset >= 0 else None, cycle,
                                    before[p], after[p]))
        finally:
            c.close()

    b, load, check, cycles = run_damaged(broker_factory, workdir, chaos_report, "idx", damage,
                                         after_restart=after_restart)
    assert lookups, "no ListOffsets by time was checked"
    wrong, exact = [], 0
    for p, target, answer, cycle, before, after in lookups:
        offs, tss = check.timestamps[p]
        want = expected_offset_for_time(offs, tss, target)
        # Every record below the log end read before the lookup was stored when it ran (no
        # holes, nothing lost: check_topic proves both), so a record found there must be the
        # answer; one stored only between the two reads may or may not have been seen; one
        # past the later log end was not there yet.
        if want is not None and want < before:
            exact += 1
            ok = answer == want
        elif want is not None and want < after:
            ok = answer in (want, None)
        else:
            ok = answer is None
        if not ok:
            wrong.append((p, target, answer, want, cycle, before, after))
    chaos_report["time_lookups"] = len(lookups)
    assert not wrong, (f"{len(wrong)} of {len(lookups)} ListOffsets by time answered wrongly "
                       f"(partition, target, answered, expected, cycle, log end before, after): "
                       f"{wrong[:5]}")
    # Most targets are seconds older than the kill: their records were stored long before.
    assert exact * 2 >= len(lookups), f"only {exact} of {len(lookups)} lookups had a stored answer"


def produce_timed(broker, topic, n, first_ts_ms, step_ms):
    """n records of 300 bytes, record i with timestamp first_ts_ms + i * step_ms, in small
    batches (so that the indexes get many entries); returns when all are acknowledged."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.num.messages": 20})
    errors = []
    for i in range(n):
        p.produce(topic, value=b"%08d" % i + b"x" * 292, timestamp=first_ts_ms + i * step_ms,
                  on_delivery=lambda e, m: e and errors.append(e))
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0 and not errors, errors[:3]


def truncate_sealed_time_indexes(broker, topic):
    """SIGKILLs the broker once its sealed segments are synced (the recovery point has moved past
    them, so recovery does not rescan them) and cuts the `.timeindex` of every sealed segment to
    its first entry (what a torn write of the file leaves); returns the segment bases."""
    pdir = partition_dir(broker, topic, 0)
    deadline = time.monotonic() + 20
    while True:
        bases = segment_bases(pdir)
        point = (pdir / "recovery-point").read_text().strip() if (pdir / "recovery-point").exists() else ""
        if point.isdigit() and int(point) >= bases[-1]:
            break
        assert time.monotonic() < deadline, f"the recovery point stays at {point!r}, segments {bases}"
        time.sleep(0.05)
    broker.kill()
    bases = segment_bases(pdir)
    assert len(bases) >= 2, f"expected sealed segments, got {bases}"
    for base in bases[:-1]:
        ti = seg_path(pdir, base, "timeindex")
        data = ti.read_bytes()
        assert len(data) >= 24, f"{ti.name} has fewer than two entries"
        ti.write_bytes(data[:12])
    return bases


def test_truncated_time_index_keeps_offsets_by_time_right(broker_factory):
    """A sealed segment whose `.timeindex` lost its tail still holds its records: ListOffsets by
    time must find them (not skip to the next segment because the index's last entry is older
    than the segment's newest record)."""
    b = broker_factory(http_addr="off")
    create_topic(b, "ti", 1, {"segment.bytes": str(MIB)})
    n, t0 = 10_000, int(time.time() * 1000) - 100_000
    produce_timed(b, "ti", n, t0, 1)
    bases = truncate_sealed_time_indexes(b, "ti")
    b.start()
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "chaos-lookups"})
    try:
        wrong = []
        for k in range(0, n, 250):
            tp = c.offsets_for_times([TopicPartition("ti", 0, t0 + k)], timeout=20)[0]
            if tp.offset != k:
                wrong.append((k, tp.offset))
    finally:
        c.close()
    assert not wrong, (f"segments {bases}: ListOffsets by time for record k's timestamp answered "
                       f"(k, offset): {wrong[:6]} ({len(wrong)} wrong)")


def test_truncated_time_index_does_not_make_retention_delete_fresh_records(broker_factory):
    """Retention deletes a sealed segment only when its newest record is older than
    `retention.ms`; a `.timeindex` that lost its tail must not make a segment holding records
    within retention look older (they would be deleted, acknowledged and still wanted)."""
    retention_ms = 10 * 60_000
    b = broker_factory(http_addr="off", retention_check_interval_ms=200)
    create_topic(b, "tr", 1, {"segment.bytes": str(MIB), "retention.ms": str(retention_ms)})
    # Timestamps from 20 min ago to 1 min ago: the first ~half is past retention, the rest not.
    n, now = 8_000, int(time.time() * 1000)
    step = 19 * 60_000 // n
    t0 = now - 20 * 60_000
    produce_timed(b, "tr", n, t0, step)
    first_kept = next(i for i in range(n) if t0 + i * step >= now - retention_ms + 60_000)
    bases = truncate_sealed_time_indexes(b, "tr")
    b.start()
    time.sleep(2)  # ten retention passes
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "chaos-watermarks"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition("tr", 0), timeout=10)
    finally:
        c.close()
    # Every segment holding a record within retention (by a minute's margin) must still be there.
    must_keep = max(base for base in bases if base <= first_kept)
    assert hi == n
    assert lo <= must_keep, (f"segments {bases}: log start {lo} after the restart, but segment "
                             f"{must_keep} holds records newer than retention (from offset {first_kept})")
