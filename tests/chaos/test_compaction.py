"""kill -9 cycles while the log cleaner compacts (issue 14, part 5).

A compacted topic with small segments gets rounds of keyed updates (confluent-kafka, acks=all);
the cleaner runs slowly (STROM_TEST_CLEANER_PAUSE_MS before each segment) and the broker is
SIGKILLed at a random moment of each cycle, CHAOS_CYCLES times on the same data dir. After each
restart the log is checked with a consumer from the beginning: offsets strictly increasing;
every record is the one produced at its offset (nothing moved, nothing invented); every key's
last acknowledged value is there; no `.cleaned`/`.swap` file from before the kill survives the start. At the end,
without the pause, compaction completes: exactly the last value per key.
"""

import random
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from chaos import CYCLES, seed

pytestmark = pytest.mark.timeout(120 + 20 * CYCLES)

CONFIG = {"cleanup.policy": "compact", "segment.bytes": "4096", "segment.ms": "200",
          "min.cleanable.dirty.ratio": "0.01"}
KEYS = 25


def produce_round(b, round_no):
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0, "batch.size": 2000})
    acked = {}

    def done(err, msg):
        if err is None:
            acked[msg.offset()] = (msg.key(), msg.value())

    for k in range(KEYS):
        for r in range(6):
            p.produce("state", key=f"key-{k}".encode(), value=f"v-{k}-{round_no}-{r}-{'x' * 40}".encode(),
                      on_delivery=done)
        p.poll(0)
    assert p.flush(30) == 0
    time.sleep(0.3)
    p.produce("state", key=b"sentinel", value=str(round_no).encode(), on_delivery=done)  # rolls
    assert p.flush(30) == 0
    return acked


def read_all(b):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "chaos-compaction-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        _, hi = c.get_watermark_offsets(TopicPartition("state", 0), timeout=10)
        c.assign([TopicPartition("state", 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= hi:
                    return out
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(m.error())
                continue
            out.append((m.offset(), m.key(), m.value()))
        raise AssertionError(f"read {len(out)} records, high watermark {hi}")
    finally:
        c.close()


def check(b, produced, started=0.0):
    got = read_all(b)
    offs = [o for o, _, _ in got]
    assert offs == sorted(set(offs)), "offsets not strictly increasing"
    for o, k, v in got:
        assert produced.get(o) == (k, v), f"offset {o} holds {k, v}, produced {produced.get(o)}"
    last = {}
    for o in sorted(produced):
        last[produced[o][0]] = o
    for k, o in last.items():
        assert (o, *produced[o]) in got, f"lost the last value of {k} (offset {o})"
    # No swap file from before the start survived it (a pass started since may have new ones).
    pdir = b.data_dir / "state-0"
    left = [f for f in [*pdir.glob("*.cleaned"), *pdir.glob("*.swap")] if f.stat().st_mtime < started]
    assert not left, f"left over from before the restart: {left}"
    return got, last


def test_kill9_while_cleaning_keeps_every_last_value(broker_factory):
    rng = random.Random(seed())
    b = broker_factory(http_addr="off", log_cleaner_backoff_ms=50,
                       env={"STROM_TEST_CLEANER_PAUSE_MS": "150"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})  # alive until the future resolves
    admin.create_topics([NewTopic("state", 1, 1, config=CONFIG)])["state"].result(timeout=20)
    produced = {}
    for cycle in range(CYCLES):
        produced.update(produce_round(b, cycle))
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in a pass (150 ms per segment)
        b.kill()
        started = time.time()
        b.start()
        check(b, produced, started)
    swaps = b.log.count("interrupted cleaner swap")
    passes = b.log.count("log cleaner pass")
    print(f"{CYCLES} kills: {passes} passes completed, {swaps} interrupted swaps finished or rolled back")
    del b.env["STROM_TEST_CLEANER_PAUSE_MS"]
    b.restart()
    deadline = time.monotonic() + 60
    while True:
        got, last = check(b, produced)
        body = [r for r in got if r[1] != b"sentinel"]
        if len(body) == KEYS:
            break
        assert time.monotonic() < deadline, f"not compacted: {len(body)} records for {KEYS} keys"
        time.sleep(0.3)
