"""Queues (share groups, KIP-932 semantics) over the HTTP door: receive / ack / renew, the
WebSocket queue subscription, retry backoff, the dead-letter topic (read back with
confluent-kafka), kill -9 durability and bad input, over a real `strom serve`."""

import json
import threading
import time

import pytest
import requests
from confluent_kafka import Consumer
from websockets.sync.client import connect as ws_connect

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def b(broker_factory):
    return broker_factory(http=True)


def create(b, name, partitions=1, configs=None):
    r = requests.post(f"{b.http}/topics", json={"name": name, "partitions": partitions, "configs": configs or {}})
    assert r.status_code == 201, r.text


def produce(b, topic, values, partition=None):
    recs = [{"value": v, "headers": [["src", "test"]], **({"partition": partition} if partition is not None else {})}
            for v in values]
    r = requests.post(f"{b.http}/topics/{topic}/records", json={"records": recs})
    assert r.status_code == 200, r.text


def configure(b, group, configs, expect=200):
    r = requests.post(f"{b.http}/queues/{group}/config", json={"configs": configs})
    assert r.status_code == expect, r.text
    return r.json()


def receive(b, group, topics, max_records=100, wait_ms=0):
    r = requests.post(f"{b.http}/queues/{group}/receive",
                      json={"topics": topics, "max_records": max_records, "wait_ms": wait_ms})
    assert r.status_code == 200, r.text
    return r.json()["records"]


def ack(b, group, receipts, kind="accept"):
    return requests.post(f"{b.http}/queues/{group}/ack",
                         json={"acks": [{"receipt": r, "type": kind} for r in receipts]})


def describe(b, group):
    r = requests.get(f"{b.http}/queues/{group}")
    assert r.status_code == 200, r.text
    return r.json()


def test_several_receivers_each_record_accepted_once(b):
    create(b, "q-work", 3)
    configure(b, "workers", {"share.auto.offset.reset": "earliest"})
    n = 600
    for p in range(3):
        produce(b, "q-work", [f"p{p}-{i}" for i in range(n // 3)], partition=p)
    seen, lock, errors = [], threading.Lock(), []

    def worker():
        s = requests.Session()
        idle = 0
        while idle < 3:
            r = s.post(f"{b.http}/queues/workers/receive", json={"topics": ["q-work"], "max_records": 25, "wait_ms": 300})
            if r.status_code != 200:
                errors.append(r.text)
                return
            recs = r.json()["records"]
            if not recs:
                idle += 1
                continue
            idle = 0
            a = s.post(f"{b.http}/queues/workers/ack", json={"acks": [{"receipt": x["receipt"], "type": "accept"} for x in recs]})
            if a.status_code != 200:
                errors.append(a.text)
                return
            with lock:
                seen.extend((x["partition"], x["offset"], x["value"], x["delivery_count"]) for x in recs)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    keys = [(p, o) for p, o, _, _ in seen]
    assert len(keys) == n and len(set(keys)) == n, f"{len(keys)} received, {len(set(keys))} distinct"
    assert all(dc == 1 for *_, dc in seen)
    assert {v for _, _, v, _ in seen} == {f"p{p}-{i}" for p in range(3) for i in range(n // 3)}
    d = describe(b, "workers")
    assert d["type"] == "share"
    assert sorted((p["partition"], p["start_offset"], p["in_flight"]) for p in d["partitions"]) == \
        [(0, n // 3, 0), (1, n // 3, 0), (2, n // 3, 0)]
    # Nothing more to receive: everything was accepted.
    assert receive(b, "workers", ["q-work"], wait_ms=200) == []
    m = requests.get(f"{b.http}/metrics").text
    assert 'strom_share_in_flight{group="workers",topic="q-work",partition="0"} 0' in m


def test_release_redelivers_with_growing_delivery_count_and_the_configured_backoff(b):
    create(b, "q-retry")
    configure(b, "retry", {"share.auto.offset.reset": "earliest", "strom.retry.backoff.ms": "400",
                           "strom.retry.backoff.max.ms": "5000", "share.delivery.count.limit": "5"})
    produce(b, "q-retry", ["only"])
    delivered_at, released_at = [], []
    for expected_dc in (1, 2, 3):
        recs = receive(b, "retry", ["q-retry"], wait_ms=5000)
        delivered_at.append(time.monotonic())
        assert len(recs) == 1, recs
        assert (recs[0]["value"], recs[0]["delivery_count"]) == ("only", expected_dc)
        assert recs[0]["headers"] == [["src", "test"]]
        released_at.append(time.monotonic())
        r = ack(b, "retry", [recs[0]["receipt"]], "release")
        assert r.status_code == 200, r.text
        # Not before the backoff.
        assert receive(b, "retry", ["q-retry"], wait_ms=0) == []
    gaps = [delivered_at[i + 1] - released_at[i] for i in range(2)]
    # Released after delivery 1 -> again no earlier than 400 ms; after delivery 2 -> 800 ms
    # (400 x 2^(dc-1), + up to 10 % jitter, + the ticker's 20 ms).
    assert 0.4 <= gaps[0] < 1.5, gaps
    assert 0.8 <= gaps[1] < 2.0, gaps
    print(f"measured redelivery gaps: {gaps[0] * 1000:.0f} ms, {gaps[1] * 1000:.0f} ms (configured 400, 800)")
    d = describe(b, "retry")["partitions"][0]
    assert d["redeliveries"] >= 2
    m = requests.get(f"{b.http}/metrics").text
    assert 'strom_share_redeliveries_total{group="retry",topic="q-retry",partition="0"}' in m


def dlq_records(b, topic, n, timeout=20):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"dlq-reader-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append(m)
    finally:
        c.close()
    return out


def test_reject_and_the_delivery_limit_go_to_the_dead_letter_topic(b):
    create(b, "q-poison")
    configure(b, "dlq", {"share.auto.offset.reset": "earliest", "share.delivery.count.limit": "2",
                         "errors.deadletterqueue.topic.name": "q-poison.dlq"})
    produce(b, "q-poison", ["bad", "flaky", "good"])
    recs = receive(b, "dlq", ["q-poison"], wait_ms=5000)
    by = {r["value"]: r for r in recs}
    assert set(by) == {"bad", "flaky", "good"}
    r = requests.post(f"{b.http}/queues/dlq/ack", json={"acks": [
        {"receipt": by["bad"]["receipt"], "type": "reject"},
        {"receipt": by["flaky"]["receipt"], "type": "release"},
        {"receipt": by["good"]["receipt"], "type": "accept"}]})
    assert r.status_code == 200, r.text
    again = receive(b, "dlq", ["q-poison"], wait_ms=5000)
    assert [(x["value"], x["delivery_count"]) for x in again] == [("flaky", 2)]
    assert ack(b, "dlq", [again[0]["receipt"]], "release").status_code == 200
    msgs = dlq_records(b, "q-poison.dlq", 2)
    got = {}
    for m in msgs:
        h = {k: (v.decode() if v is not None else None) for k, v in (m.headers() or [])}
        got[m.value().decode()] = h
    assert set(got) == {"bad", "flaky"}, got
    for value, offset, dc, reason in (("bad", "0", "1", "CLIENT_REJECTED"),
                                      ("flaky", "1", "2", "MAX_DELIVERY_ATTEMPTS_REACHED")):
        h = got[value]
        assert h["src"] == "test", "the record's own headers are kept"
        assert h["_dlq.errors.original.topic"] == "q-poison"
        assert h["_dlq.errors.original.partition"] == "0"
        assert h["_dlq.errors.original.offset"] == offset
        assert h["_dlq.errors.group"] == "dlq"
        assert h["_dlq.errors.delivery.count"] == dc
        assert h["_dlq.errors.disposition"] == reason
    # Archived: the start offset moved past all three, nothing comes again.
    deadline = time.monotonic() + 5
    while describe(b, "dlq")["partitions"][0]["start_offset"] != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    p = describe(b, "dlq")["partitions"][0]
    assert (p["start_offset"], p["dead_lettered"]) == (3, 2)
    assert receive(b, "dlq", ["q-poison"], wait_ms=300) == []
    assert 'strom_share_dead_lettered_total{group="dlq",topic="q-poison",partition="0"} 2' in \
        requests.get(f"{b.http}/metrics").text


def test_kill_9_nothing_accepted_repeats_nothing_unaccepted_is_lost(b):
    create(b, "q-crash", 2)
    configure(b, "crash", {"share.auto.offset.reset": "earliest"})
    values = [f"v{i}" for i in range(200)]
    produce(b, "q-crash", values[:100], partition=0)
    produce(b, "q-crash", values[100:], partition=1)
    accepted = set()
    held = []
    # Accept some, hold others acquired (not acked) at the kill.
    for _ in range(3):
        recs = receive(b, "crash", ["q-crash"], max_records=40, wait_ms=2000)
        keep, done = recs[:10], recs[10:]
        assert ack(b, "crash", [x["receipt"] for x in done]).status_code == 200
        accepted |= {x["value"] for x in done}
        held += keep
    assert len(accepted) == 90 and len(held) == 30
    b.kill()
    b.start()
    # The old receipts are stale after the restart (and change nothing).
    r = ack(b, "crash", [held[0]["receipt"]])
    assert r.status_code == 409, r.text
    assert r.json()["results"][0]["ok"] is False
    got = []
    while True:
        recs = receive(b, "crash", ["q-crash"], max_records=100, wait_ms=500)
        if not recs:
            break
        assert ack(b, "crash", [x["receipt"] for x in recs]).status_code == 200
        got += recs
    values_after = [x["value"] for x in got]
    assert not (set(values_after) & accepted), "an accepted record was delivered again"
    assert set(values_after) | accepted == set(values), "a record was lost"
    assert len(values_after) == len(set(values_after))
    redelivered = {x["value"]: x["delivery_count"] for x in got if x["value"] in {h["value"] for h in held}}
    assert len(redelivered) == 30 and set(redelivered.values()) == {2}, redelivered
    # A clean restart keeps the state too.
    b.restart()
    assert receive(b, "crash", ["q-crash"], wait_ms=300) == []


def test_bad_input_is_4xx_json_and_changes_nothing(b):
    create(b, "q-bad")
    configure(b, "bad", {"share.auto.offset.reset": "earliest", "share.record.lock.duration.ms": "1000"})
    produce(b, "q-bad", ["x"])
    # Malformed bodies.
    for body in ("not json", json.dumps({"topics": "q-bad"}), json.dumps({"topics": ["q-bad"], "nope": 1}),
                 json.dumps({"topics": []}), json.dumps({"topics": ["q-bad"], "max_records": 0}),
                 json.dumps({"topics": ["q-bad"], "wait_ms": 10 ** 9})):
        r = requests.post(f"{b.http}/queues/bad/receive", data=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"]
    r = requests.post(f"{b.http}/queues/bad/receive", json={"topics": ["missing"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_topic_or_partition"
    for body in ({"acks": "x"}, {"acks": [{"receipt": 1}]}, {"acks": []}, {"nope": []}):
        r = requests.post(f"{b.http}/queues/bad/ack", json=body)
        assert r.status_code == 400, (body, r.text)
        assert "error" in r.json()
    # Bad config values and unknown names: 400 invalid_config, nothing set.
    before = requests.get(f"{b.http}/queues/bad/config").json()
    for configs in ({"share.record.lock.duration.ms": "soon"}, {"share.unknown": "1"},
                    {"share.auto.offset.reset": "by_duration:1h"}, {"share.delivery.count.limit": "0"},
                    {"strom.retry.backoff.ms": "-1"}, {"errors.deadletterqueue.topic.name": "bad name!"},
                    {"share.isolation.level": "read_committed", "share.heartbeat.interval.ms": "x"}):
        r = requests.post(f"{b.http}/queues/bad/config", json={"configs": configs})
        assert r.status_code == 400, (configs, r.text)
        assert r.json()["error"]["code"] == "invalid_config"
    assert requests.get(f"{b.http}/queues/bad/config").json() == before
    # An unknown receipt: 400 with a JSON reason; a stale one (lock expired): 409; neither
    # changes anything.
    recs = receive(b, "bad", ["q-bad"], wait_ms=2000)
    assert len(recs) == 1
    r = ack(b, "bad", ["bm9wZQ"])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["results"][0]["ok"] is False and body["results"][0]["error"]["code"] == "invalid_receipt"
    assert body["error"]["code"] == "invalid_receipt"
    time.sleep(1.3)  # the 1 s lock expires
    r = ack(b, "bad", [recs[0]["receipt"]])
    assert r.status_code == 409, r.text
    assert r.json()["results"][0]["error"]["code"] == "invalid_record_state"
    again = receive(b, "bad", ["q-bad"], wait_ms=2000)
    assert [(x["value"], x["delivery_count"]) for x in again] == [("x", 2)], "the refused ack changed nothing"
    # The first delivery's receipt stays stale even now that the record is held again.
    r = ack(b, "bad", [recs[0]["receipt"]])
    assert r.status_code == 409
    assert describe(b, "bad")["partitions"][0]["acquired"] == 1
    # Renew keeps it past its lock duration; then the accept goes through.
    for _ in range(3):
        time.sleep(0.5)
        r = requests.post(f"{b.http}/queues/bad/renew", json={"receipts": [again[0]["receipt"]]})
        assert r.status_code == 200, r.text
    assert ack(b, "bad", [again[0]["receipt"]]).status_code == 200
    # A second accept of the same receipt is refused.
    assert ack(b, "bad", [again[0]["receipt"]]).status_code == 409
    # A classic consumer group's id cannot be a share group.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "classic-one", "auto.offset.reset": "earliest"})
    c.subscribe(["q-bad"])
    deadline = time.monotonic() + 20
    while c.assignment() == [] and time.monotonic() < deadline:
        c.poll(0.2)
    r = requests.post(f"{b.http}/queues/classic-one/receive", json={"topics": ["q-bad"]})
    c.close()
    assert r.status_code == 404 and r.json()["error"]["code"] == "group_id_not_found", r.text


def test_websocket_queue_subscription_with_acks(b):
    create(b, "q-ws")
    configure(b, "wsq", {"share.auto.offset.reset": "earliest"})
    produce(b, "q-ws", [f"w{i}" for i in range(20)])
    url = f"ws://127.0.0.1:{b.http_port}/ws"
    got = []
    with ws_connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "queue", "group": "wsq", "topics": ["q-ws"], "max_in_flight": 5}))
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "subscribed" and first["queue"] == "wsq", first
        released = None
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            m = json.loads(ws.recv(timeout=10))
            if m["type"] == "acked":
                assert all(r["ok"] for r in m["results"]), m
                continue
            assert m["type"] == "record", m
            rec = m["record"]
            if rec["value"] == "w3" and released is None:
                released = rec
                ws.send(json.dumps({"op": "ack", "receipt": rec["receipt"], "type": "release"}))
                continue
            got.append((rec["value"], rec["delivery_count"]))
            ws.send(json.dumps({"op": "ack", "receipt": rec["receipt"], "type": "accept"}))
        ws.send(json.dumps({"op": "ack", "receipt": "garbage"}))
        while True:
            m = json.loads(ws.recv(timeout=10))
            if m["type"] == "acked" and m["results"][0]["receipt"] == "garbage":
                assert m["results"][0]["ok"] is False
                break
    assert sorted(v for v, _ in got) == sorted(f"w{i}" for i in range(20))
    assert dict(got)["w3"] == 2, "the released record came back with delivery count 2"
    # HTTP receivers and the socket shared the group: nothing left.
    assert receive(b, "wsq", ["q-ws"], wait_ms=300) == []


def test_a_closed_socket_gives_its_records_back(b):
    create(b, "q-ws2")
    configure(b, "wsq2", {"share.auto.offset.reset": "earliest"})
    produce(b, "q-ws2", ["a", "b"])
    with ws_connect(f"ws://127.0.0.1:{b.http_port}/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "queue", "group": "wsq2", "topics": ["q-ws2"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        recs = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
        assert {r["record"]["value"] for r in recs} == {"a", "b"}
    # Closed without acks: its member left, the records are available again at once.
    recs = receive(b, "wsq2", ["q-ws2"], wait_ms=5000)
    assert sorted((x["value"], x["delivery_count"]) for x in recs) == [("a", 2), ("b", 2)]


def test_openapi_describes_the_queue_endpoints(b):
    doc = requests.get(f"{b.http}/openapi.json").json()
    for path in ("/queues/{group}/receive", "/queues/{group}/ack", "/queues/{group}/renew",
                 "/queues/{group}", "/queues/{group}/config"):
        assert path in doc["paths"], path


def test_a_socket_that_never_acks_gets_its_expired_records_again(b):
    create(b, "q-ws3")
    configure(b, "wsq3", {"share.auto.offset.reset": "earliest", "share.record.lock.duration.ms": "1000"})
    produce(b, "q-ws3", ["a", "b", "c"])
    with ws_connect(f"ws://127.0.0.1:{b.http_port}/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "queue", "group": "wsq3", "topics": ["q-ws3"], "max_in_flight": 2}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        seen = [json.loads(ws.recv(timeout=10))["record"] for _ in range(2)]
        assert [(r["value"], r["delivery_count"]) for r in seen] == [("a", 1), ("b", 1)]
        # At max_in_flight nothing more comes until the locks expire (1 s); then the socket
        # gets records again (the expired ones first, delivery 2), never stalling.
        later = [json.loads(ws.recv(timeout=10))["record"] for _ in range(2)]
        assert [(r["value"], r["delivery_count"]) for r in later] == [("a", 2), ("b", 2)], later
    m = requests.get(f"{b.http}/metrics").text
    assert 'strom_share_lock_expiries_total{group="wsq3",topic="q-ws3",partition="0"}' in m


def test_a_share_group_id_cannot_be_joined_as_a_classic_group(b):
    create(b, "q-ns")
    configure(b, "shared-id", {"share.auto.offset.reset": "earliest"})
    produce(b, "q-ns", ["x"])
    assert len(receive(b, "shared-id", ["q-ns"], wait_ms=2000)) == 1
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "shared-id", "auto.offset.reset": "earliest"})
    c.subscribe(["q-ns"])
    errors = []
    deadline = time.monotonic() + 20
    try:
        while not errors and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error():
                errors.append(m.error())
            elif m is not None:
                pytest.fail("a classic member consumed from a share group's id")
    finally:
        c.close()
    assert errors and "INCONSISTENT_GROUP_PROTOCOL" in str(errors[0]).upper(), errors


def test_the_in_flight_window_is_bounded_whatever_the_backlog(broker_factory):
    b = broker_factory(http=True, group_share_partition_max_record_locks=100)
    create(b, "q-backlog")
    configure(b, "slow", {"share.auto.offset.reset": "earliest"})
    for i in range(5):
        produce(b, "q-backlog", [f"r{i}-{j}" for j in range(1000)])
    held = []
    while True:
        recs = receive(b, "slow", ["q-backlog"], max_records=40, wait_ms=200)
        if not recs:
            break
        held += recs
    # Acquisition stopped at the window's bound (100), not at the backlog (5000).
    assert len(held) == 100, len(held)
    p = describe(b, "slow")["partitions"][0]
    assert (p["in_flight"], p["acquired"], p["start_offset"], p["end_offset"]) == (100, 100, 0, 100)
    assert p["lag"] == 5000
    # Accepting the first 30 frees 30 slots.
    assert ack(b, "slow", [x["receipt"] for x in held[:30]]).status_code == 200
    more = receive(b, "slow", ["q-backlog"], max_records=1000, wait_ms=200)
    assert [x["offset"] for x in more] == list(range(100, 130))
