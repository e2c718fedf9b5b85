"""Delayed delivery (`strom.delay.ms`, `strom.deliver.at`) and dedup by message id
(`strom.msg.id`) over a real `strom serve`: headers sent by confluent-kafka's Producer and by
the HTTP door, read back by a plain confluent-kafka Consumer and by SSE, across kill -9
restarts; bad delay headers refused with nothing stored; the metrics on /metrics."""

import json
import re
import threading
import time

import pytest
import requests
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

pytestmark = pytest.mark.timeout(120)


def now_ms():
    return int(time.time() * 1000)


def create(b, name, configs=None):
    r = requests.post(f"{b.http}/topics", json={"name": name, "partitions": 1, "configs": configs or {}})
    assert r.status_code == 201, r.text


def metric(b, name):
    text = requests.get(f"{b.http}/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def wait_metric(b, name, want, timeout=10):
    """The metric once it reads `want` (a delivery is visible to readers a moment before
    its progress is recorded and the gauge moves)."""
    deadline = time.monotonic() + timeout
    while (v := metric(b, name)) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return v


def produce(b, topic, value, headers=None, **conf):
    """One record through confluent-kafka; returns (error, offset) of its delivery report.
    A delayed record's produce response carries offset -1, which librdkafka reports as no
    offset: None here."""
    out = []
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "message.timeout.ms": 15000, **conf})
    p.produce(topic, value=value, headers=headers or [], partition=0,
              on_delivery=lambda err, msg: out.append((err, msg.offset())))
    assert p.flush(20) == 0
    return out[0]


class Reader:
    """A plain consumer (assigned, no group) in a thread: every value with when it came."""

    def __init__(self, b, topic):
        self.got = []
        self.stop = threading.Event()
        self.c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"r-{topic}",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self.c.assign([TopicPartition(topic, 0, 0)])
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            m = self.c.poll(0.05)
            if m is not None and not m.error():
                self.got.append((m.value().decode(), now_ms(), dict(m.headers() or [])))

    def values(self):
        return [v for v, _, _ in self.got]

    def wait_for(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.c.close()


class Sse:
    """SSE events of a topic (from the earliest offset) with when they came."""

    def __init__(self, b, topic):
        self.got = []
        self.t = threading.Thread(target=self.run, args=(b, topic), daemon=True)
        self.t.start()

    def run(self, b, topic):
        try:
            with requests.get(f"{b.http}/topics/{topic}/events", params={"from": "earliest"},
                              stream=True, timeout=40) as r:
                for line in r.iter_lines():
                    if line.startswith(b"data:"):
                        self.got.append((json.loads(line[5:])["record"]["value"], now_ms()))
        except requests.RequestException:
            pass  # the broker went away (kill -9) or the test ended

    def wait_for(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got


def test_delayed_records_reach_kafka_consumer_and_sse_no_earlier_than_due(broker_factory):
    b = broker_factory(http=True)
    create(b, "dl")
    reader, sse = Reader(b, "dl"), Sse(b, "dl")
    t0 = now_ms()
    err, off = produce(b, "dl", b"kafka-delayed", [("strom.delay.ms", b"2000")])
    assert err is None and off is None, (err, off)
    due_http = now_ms() + 1500
    r = requests.post(f"{b.http}/topics/dl/records", json={"records": [
        {"value": "http-delayed", "headers": [["strom.deliver.at", str(due_http)]]},
        {"value": "http-now"}]})
    assert r.status_code == 200, r.text
    assert [o["offset"] for o in r.json()["offsets"]] == [-1, 0]
    err, off = produce(b, "dl", b"kafka-now")
    assert err is None and off == 1
    assert metric(b, "strom_delayed_records_pending") == 2
    got = reader.wait_for(4)
    when = {v: t for v, t, _ in got}
    assert set(when) == {"kafka-delayed", "http-delayed", "http-now", "kafka-now"}, reader.values()
    assert reader.values()[:2] == ["http-now", "kafka-now"]
    assert when["kafka-delayed"] >= t0 + 2000, when["kafka-delayed"] - t0
    assert when["http-delayed"] >= due_http, when["http-delayed"] - due_http
    # Not much later either: within the 1 s bucket plus a tick and the consumer's poll.
    assert when["kafka-delayed"] < t0 + 2000 + 3000
    # The delivered record keeps the producer's headers and says where it came from.
    headers = {v: h for v, _, h in got}
    assert headers["kafka-delayed"]["strom.delay.ms"] == b"2000"
    assert "strom.delay.id" in headers["kafka-delayed"]
    events = dict(sse.wait_for(4))
    assert events.keys() == when.keys()
    assert events["kafka-delayed"] >= t0 + 2000 and events["http-delayed"] >= due_http
    assert wait_metric(b, "strom_delayed_records_pending", 0) == 0
    assert metric(b, "strom_delayed_records_delivered_total") == 2
    reader.close()
    # Every record is stored once.
    c = requests.get(f"{b.http}/topics/dl/partitions/0/records", params={"max_records": 100}).json()
    assert sorted(x["value"] for x in c["records"]) == sorted(when)


def test_delayed_records_survive_kill_9(broker_factory):
    b = broker_factory(http=True)
    create(b, "dk")
    t0 = now_ms()
    for i in range(5):
        err, off = produce(b, "dk", f"d{i}".encode(), [("strom.delay.ms", b"3000")], acks="all")
        assert err is None and off is None
    err, _ = produce(b, "dk", b"immediate")
    assert err is None
    b.kill()  # acknowledged, not yet due
    b.start()
    assert metric(b, "strom_delayed_records_pending") == 5
    reader, sse = Reader(b, "dk"), Sse(b, "dk")
    got = reader.wait_for(6, timeout=30)
    assert sorted(reader.values()) == sorted(["immediate"] + [f"d{i}" for i in range(5)])
    assert all(t >= t0 + 3000 for v, t, _ in got if v != "immediate")
    assert len(sse.wait_for(6)) == 6
    # Nothing comes twice: another second of polling sees no more records.
    time.sleep(1.5)
    assert len(reader.got) == 6
    reader.close()
    assert wait_metric(b, "strom_delayed_records_pending", 0) == 0


def test_delayed_record_due_during_downtime_is_delivered_after_restart(broker_factory):
    b = broker_factory(http=True)
    create(b, "dd")
    err, off = produce(b, "dd", b"late", [("strom.deliver.at", str(now_ms() + 1000).encode())])
    assert err is None and off is None
    b.kill()
    time.sleep(1.5)  # due while the broker is down
    b.start()
    reader = Reader(b, "dd")
    assert [v for v, _, _ in reader.wait_for(1)] == ["late"]
    time.sleep(1)
    assert reader.values() == ["late"]
    reader.close()


def test_dedup_by_message_id_across_kill_9(broker_factory):
    b = broker_factory(http=True)
    create(b, "dup")
    assert produce(b, "dup", b"first")[1] == 0
    err, x = produce(b, "dup", b"x-1", [("strom.msg.id", b"X")])
    assert (err, x) == (None, 1)
    err, again = produce(b, "dup", b"x-2", [("strom.msg.id", b"X")])
    assert (err, again) == (None, 1)
    b.kill()
    b.start()
    # After the restart the window is rebuilt from the log: same offset, nothing stored.
    err, after = produce(b, "dup", b"x-3", [("strom.msg.id", b"X")])
    assert (err, after) == (None, 1)
    r = requests.post(f"{b.http}/topics/dup/records", json={"records": [
        {"value": "x-http", "headers": [["strom.msg.id", "X"]]},
        {"value": "y-http", "headers": [["strom.msg.id", "Y"]]},
        {"value": "y-again", "headers": [["strom.msg.id", "Y"]]}]})
    assert r.status_code == 200, r.text
    assert [o["offset"] for o in r.json()["offsets"]] == [1, 2, 2]
    got = requests.get(f"{b.http}/topics/dup/partitions/0/records", params={"max_records": 100}).json()
    assert [x["value"] for x in got["records"]] == ["first", "x-1", "y-http"]
    assert metric(b, "strom_dedup_hits_total") == 3  # since the restart: x-3, x-http, y-again
    # A different id and a record without one are stored.
    assert produce(b, "dup", b"z", [("strom.msg.id", b"Z")])[1] == 3
    assert produce(b, "dup", b"plain")[1] == 4


def test_dedup_window_zero_disables_and_window_expires(broker_factory):
    b = broker_factory(http=True)
    create(b, "dw", {"strom.dedup.window.ms": "0"})
    assert produce(b, "dw", b"a", [("strom.msg.id", b"A")])[1] == 0
    assert produce(b, "dw", b"a", [("strom.msg.id", b"A")])[1] == 1
    create(b, "dw2", {"strom.dedup.window.ms": "1000"})
    assert produce(b, "dw2", b"a", [("strom.msg.id", b"A")])[1] == 0
    assert produce(b, "dw2", b"a", [("strom.msg.id", b"A")])[1] == 0
    time.sleep(1.2)
    assert produce(b, "dw2", b"a", [("strom.msg.id", b"A")])[1] == 1
    r = requests.get(f"{b.http}/topics/dw")
    assert r.json()["configs"]["strom.dedup.window.ms"] == "0"


@pytest.mark.parametrize("headers", [
    [("strom.delay.ms", b"soon")],
    [("strom.delay.ms", b"-5")],
    [("strom.delay.ms", b"20000")],
    [("strom.deliver.at", b"not-a-time")],
    [("strom.delay.ms", b"100"), ("strom.deliver.at", b"1")],
    [("strom.msg.id", b"")],
])
def test_bad_headers_are_refused_and_nothing_is_stored(broker_factory, headers):
    b = broker_factory(http=True)
    create(b, "bad", {"strom.delay.max.ms": "10000"})
    err, _ = produce(b, "bad", b"v", headers, retries=0)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    r = requests.post(f"{b.http}/topics/bad/records", json={"records": [
        {"value": "ok"},
        {"value": "v", "headers": [[k, v.decode()] for k, v in headers]}]})
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["code"] == "invalid_record" and "strom." in e["message"], e
    got = requests.get(f"{b.http}/topics/bad/partitions/0/records").json()
    assert got["records"] == [] and got["high_watermark"] == 0
    assert metric(b, "strom_delayed_records_pending") == 0
    assert "panicked" not in b.log


def test_websocket_produce_honours_delay(broker_factory):
    from websockets.sync.client import connect as ws_connect
    b = broker_factory(http=True)
    create(b, "wsd")
    t0 = now_ms()
    with ws_connect(f"ws://{b.http[len('http://'):]}/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "produce", "topic": "wsd", "records": [
            {"value": "ws-later", "headers": [["strom.delay.ms", "1000"]]}, {"value": "ws-now"}]}))
        reply = json.loads(ws.recv(10))
        assert reply["type"] == "produced" and [o["offset"] for o in reply["offsets"]] == [-1, 0], reply
    reader = Reader(b, "wsd")
    got = reader.wait_for(2)
    assert [v for v, _, _ in got] == ["ws-now", "ws-later"]
    assert got[1][1] >= t0 + 1000
    reader.close()


def test_idempotent_producer_with_delayed_and_duplicate_records(broker_factory):
    """An idempotent producer's batches that the broker rewrites (a duplicate taken out) or
    stores nothing of (all delayed, all duplicates) keep its sequence numbers in step, also
    across a kill -9: every later produce succeeds, nothing is stored twice."""
    b = broker_factory(http=True)
    create(b, "idem")
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "linger.ms": 0,
                  "message.timeout.ms": 30000})
    reports = []

    def send(value, headers=()):
        p.produce("idem", value=value, headers=list(headers), partition=0,
                  on_delivery=lambda err, msg: reports.append((value, err, msg.offset())))
        assert p.flush(30) == 0

    send(b"a")
    send(b"x1", [("strom.msg.id", b"X")])
    send(b"x2", [("strom.msg.id", b"X")])      # all duplicates: nothing stored
    send(b"later", [("strom.delay.ms", b"4000")])  # all delayed: nothing stored now
    b.kill()
    b.start()
    send(b"b")
    send(b"x3", [("strom.msg.id", b"X")])
    send(b"c")
    assert all(err is None for _, err, _ in reports), reports
    offsets = {v: o for v, _, o in reports}
    assert offsets[b"x1"] == offsets[b"x2"] == offsets[b"x3"] == 1
    assert offsets[b"b"] == 2 and offsets[b"c"] == 3, offsets
    reader = Reader(b, "idem")
    reader.wait_for(5)
    assert sorted(reader.values()) == ["a", "b", "c", "later", "x1"], reader.values()
    time.sleep(1)
    assert len(reader.values()) == 5
    reader.close()


def test_broker_default_delay_max_and_topic_override(broker_factory):
    b = broker_factory(http=True, delay_max_ms=1000)
    create(b, "short")
    create(b, "long", {"strom.delay.max.ms": "60000"})
    err, _ = produce(b, "short", b"v", [("strom.delay.ms", b"2000")], retries=0)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD
    err, off = produce(b, "long", b"v", [("strom.delay.ms", b"2000")])
    assert err is None and off is None
    assert wait_metric(b, "strom_delayed_records_pending", 1) == 1
