"""Durability and restart (issue 3).

- kill -9 at a random moment while a client produces with acks=all to a topic with
  `flush.messages=1`; restart; every acknowledged message is there at the offset it was acknowledged
  with, in order, and nothing is there that was never sent (three rounds on the same data dir);
  with one request in flight, and with five (pipelined: appends overlap earlier syncs).
- pipelined produce to a synced topic: acknowledged once each, where stored, in order.
- produce, SIGTERM (exit 0), restart: topics, configs and every message come back.
"""

import random
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

pytestmark = pytest.mark.timeout(240)


def create(broker, name, partitions, config):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})  # alive until the future resolves
    fs = a.create_topics([NewTopic(name, partitions, 1, config=config)], operation_timeout=10)
    fs[name].result(timeout=20)


def read_all(broker, topic, partitions, timeout_s=60):
    """Every message of every partition, from offset 0 to the high watermark, via assign."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused-assign-only",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        highs = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert lo == 0, f"partition {p} starts at {lo}"
            highs[p] = hi
        out = {p: [] for p in range(partitions)}
        todo = {p for p, hi in highs.items() if hi > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            assert time.monotonic() < deadline, f"read {sum(map(len, out.values()))} of {highs}"
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                out[m.partition()].append((m.offset(), m.value()))
                if m.offset() + 1 >= highs[m.partition()]:
                    todo.discard(m.partition())
        return out
    finally:
        c.close()


def produce_until_killed(broker, topic, round_no, rng, pipelined):
    """Produces until the broker is SIGKILLed at a random moment; returns (sent, acked).

    `pipelined`: an idempotent producer with 5 requests in flight per connection, so that
    the broker appends the next requests while the earlier ones wait for their syncs."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                  "enable.idempotence": pipelined,
                  "max.in.flight.requests.per.connection": 5 if pipelined else 1, "linger.ms": 2,
                  "message.timeout.ms": 4000, "request.timeout.ms": 3000,
                  "reconnect.backoff.max.ms": 200})
    sent, acked = set(), {}
    first_ack = threading.Event()
    killed = threading.Event()

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
            first_ack.set()

    def killer():
        first_ack.wait(timeout=20)
        time.sleep(rng.uniform(0.05, 1.5))
        broker.kill()
        killed.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    i = 0
    deadline = time.monotonic() + 30
    while not killed.is_set():
        assert time.monotonic() < deadline, "the broker was never killed"
        v = f"r{round_no}-{i:08d}".encode()
        try:
            p.produce(topic, value=v, key=str(i % 13).encode(), on_delivery=on_delivery)
            sent.add(v)
            i += 1
        except BufferError:
            pass
        p.poll(0.001 if i % 100 == 0 else 0)
    t.join(timeout=30)
    p.flush(20)  # what was in flight fails (timeout) or was acked just before the kill
    assert first_ack.is_set(), "nothing was acknowledged before the kill"
    return sent, acked


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-in-flight", "five-in-flight"])
def test_acked_messages_survive_kill_minus_9(broker, pipelined):
    topic, partitions = "durable", 3
    create(broker, topic, partitions, {"flush.messages": "1"})
    rng = random.Random()
    all_sent, all_acked = set(), {}
    for round_no in range(3):
        sent, acked = produce_until_killed(broker, topic, round_no, rng, pipelined)
        all_sent |= sent
        all_acked.update(acked)
        broker.start()  # same data dir, same port
        stored = read_all(broker, topic, partitions)
        where = {}
        for p, msgs in stored.items():
            offsets = [o for o, _ in msgs]
            assert offsets == list(range(len(msgs))), f"partition {p}: offsets have holes"
            for o, v in msgs:
                assert v in all_sent, f"partition {p} offset {o}: {v!r} was never sent"
                assert v not in where, f"{v!r} stored twice"
                where[v] = (p, o)
            # In order: within a round, values were produced in increasing order per partition.
            for r in range(round_no + 1):
                mine = [v for _, v in msgs if v.startswith(f"r{r}-".encode())]
                assert mine == sorted(mine), f"partition {p}: round {r} out of order"
        lost = [v for v in all_acked if v not in where]
        assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"
        moved = [v for v, at in all_acked.items() if where[v] != at]
        assert not moved, f"acknowledged at one offset, stored at another: {moved[:3]}"
        print(f"round {round_no}: {len(acked)} acked of {len(sent)} sent; {len(where)} stored in total")


def test_pipelined_produce_to_synced_topic_acks_in_order(broker):
    """Produce requests pipelined on one connection to a `flush.messages=1` topic: the broker
    appends each while the earlier ones wait for their syncs; every record is acknowledged
    once, at the offset where it is stored, in the order sent, interleaved with other requests
    (metadata, fetches of another client) on the same broker."""
    topic, partitions, n = "synced", 3, 30_000
    create(broker, topic, partitions, {"flush.messages": "1"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True,
                  "max.in.flight.requests.per.connection": 5, "linger.ms": 1,
                  "batch.num.messages": 500})
    acked, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    for i in range(n):
        while True:
            try:
                p.produce(topic, value=f"s-{i:08d}".encode(), key=str(i % 7).encode(),
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
            p.list_topics(topic, timeout=10)  # a metadata request between the produces
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    assert len(acked) == n
    stored = read_all(broker, topic, partitions)
    assert sum(map(len, stored.values())) == n
    for part, msgs in stored.items():
        values = [v for _, v in msgs]
        assert values == sorted(values), f"partition {part}: out of order"
        for o, v in msgs:
            assert acked[v] == (part, o), f"{v!r} acknowledged at {acked[v]}, stored at {(part, o)}"


def test_sigterm_restart_keeps_topics_configs_and_data(broker):
    create(broker, "restart-a", 4, {"retention.ms": "3600000"})
    create(broker, "restart-b", 1, {})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1", "enable.idempotence": False,
                  "linger.ms": 10})
    n = 20_000
    for i in range(n):
        p.produce("restart-a", value=f"a{i}".encode(), key=str(i % 50).encode())
        if i % 5000 == 0:
            p.poll(0)
    p.produce("restart-b", value=b"only")
    assert p.flush(30) == 0
    before = read_all(broker, "restart-a", 4)

    broker.restart()  # SIGTERM, exit 0, start again

    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = a.list_topics(timeout=10).topics
    assert len(topics["restart-a"].partitions) == 4 and len(topics["restart-b"].partitions) == 1
    res = ConfigResource("topic", "restart-a")
    assert a.describe_configs([res])[res].result(timeout=20)["retention.ms"].value == "3600000"
    after = read_all(broker, "restart-a", 4)
    assert after == before
    assert sum(map(len, after.values())) == n
    assert read_all(broker, "restart-b", 1) == {0: [(0, b"only")]}

    # Appends continue at the right offsets after the restart.
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False})
    offsets = []
    p.produce("restart-b", value=b"next", on_delivery=lambda e, m: offsets.append((e, m.offset())))
    assert p.flush(20) == 0
    assert offsets == [(None, 1)]


def test_sigterm_while_producing_exits_cleanly(broker):
    create(broker, "busy", 2, {})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": False,
                  "message.timeout.ms": 4000})
    acked = {}
    stop = threading.Event()

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())

    def produce():
        i = 0
        while not stop.is_set():
            try:
                p.produce("busy", value=f"{i:08d}".encode(), on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0.0005 if i % 50 == 0 else 0)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(1.0)
    broker.stop()  # asserts exit code 0 while requests are in flight
    stop.set()
    t.join(timeout=10)
    p.flush(15)
    assert acked, "nothing was acknowledged before SIGTERM"
    broker.start()
    stored = read_all(broker, "busy", 2)
    where = {v: (p_, o) for p_, msgs in stored.items() for o, v in msgs}
    missing = [v for v in acked if where.get(v) != acked[v]]
    assert not missing, f"{len(missing)} acknowledged messages missing after a graceful stop"
