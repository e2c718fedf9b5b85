"""read_committed over every door: read_committed readers — confluent-kafka, kcat, kafka-python's
ListOffsets, the HTTP fetch / SSE / WebSocket doors — see exactly the committed records,
read_uncommitted readers see all of them; an open transaction holds the last stable offset;
kill -9 of the broker keeps read_committed exact.

Two sources of transactions: a confluent-kafka transactional producer (through the broker's
transaction coordinator); and a data directory written by the core's own API
(`target/debug/examples/txn_fixture`: transactional batches as a producer sends them, markers
through `Broker::write_txn_marker` as the coordinator writes them), served by a real
`strom serve`, whose exact layout lets the tests check offsets, the stable offset and a lost
aborted index rebuilt at start."""

import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from websockets.sync.client import connect as ws_connect


pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def http_broker(broker_factory):
    return broker_factory(http=True)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.environ.get("STROM_TXN_FIXTURE") or os.path.join(ROOT, "target", "debug", "examples", "txn_fixture")
# What the fixture wrote (see crates/strom-broker/examples/txn_fixture.rs).
FIX_COMMITTED = ["p0", "c1", "p1"]
FIX_ALL = ["p0", "a1", "a2", "c1", "p1", "a3", "open1", "p2"]


def make_fixture_broker(broker_factory, *args):
    if not os.access(FIXTURE, os.X_OK):
        pytest.fail(f"{FIXTURE} is missing: cargo build -p strom-broker --example txn_fixture (scripts/test builds it)")
    b = broker_factory(http=True, start=False)
    subprocess.run([FIXTURE, str(b.data_dir), *args], check=True, timeout=60, capture_output=True)
    return b


@pytest.fixture
def fixture_broker(broker_factory):
    b = make_fixture_broker(broker_factory)
    b.start()
    return b


def check_fixture_reads(b):
    assert consume(b, "rc-fix", "read_committed", len(FIX_COMMITTED), timeout=10) == FIX_COMMITTED
    assert consume(b, "rc-fix", "read_uncommitted", len(FIX_ALL)) == FIX_ALL
    if shutil.which("kcat"):
        assert kcat_values(b, "rc-fix", "read_committed") == FIX_COMMITTED
        assert kcat_values(b, "rc-fix", "read_uncommitted") == FIX_ALL
    values, last = http_values(b, "rc-fix")
    assert values == FIX_COMMITTED
    assert (last["last_stable_offset"], last["high_watermark"], last["next_offset"]) == (9, 11, 9)
    assert http_values(b, "rc-fix", "read_uncommitted")[0] == FIX_ALL
    assert sse_values(b, "rc-fix", len(FIX_COMMITTED)) == FIX_COMMITTED
    assert sse_values(b, "rc-fix", len(FIX_ALL), "read_uncommitted") == FIX_ALL
    assert ws_values(b, "rc-fix", len(FIX_COMMITTED)) == FIX_COMMITTED
    assert ws_values(b, "rc-fix", len(FIX_ALL), "read_uncommitted") == FIX_ALL


def test_fixture_committed_records_only_through_every_door(fixture_broker):
    b = fixture_broker
    check_fixture_reads(b)
    # ListOffsets: READ_COMMITTED latest is the stable offset, READ_UNCOMMITTED the end.
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition as KTP
    for level, want in (("read_committed", 9), ("read_uncommitted", 11)):
        kc = KafkaConsumer(bootstrap_servers=b.bootstrap, isolation_level=level)
        assert kc.end_offsets([KTP("rc-fix", 0)])[KTP("rc-fix", 0)] == want, level
        kc.close()
    metrics = requests.get(f"{b.http}/metrics").text
    assert 'strom_last_stable_offset_lag{topic="rc-fix",partition="0"} 2' in metrics
    # A read_committed long poll at the stable offset waits (nothing committed past it).
    started = time.monotonic()
    r = requests.get(f"{b.http}/topics/rc-fix/partitions/0/records",
                     params={"offset": 9, "timeout_ms": 1000}, timeout=10).json()
    assert r["records"] == [] and r["next_offset"] == 9
    assert time.monotonic() - started >= 0.9
    # HTTP group members: read_committed by default, read_uncommitted on request; the
    # committed position stops at the stable offset.
    for group, iso, want in (("rc-g1", None, FIX_COMMITTED), ("rc-g2", "read_uncommitted", FIX_ALL)):
        m = requests.post(f"{b.http}/groups/{group}/members", json={"topics": ["rc-fix"], "from": "earliest"})
        assert m.status_code == 201, m.text
        member = m.json()["member_id"]
        got = []
        deadline = time.monotonic() + 20
        while len(got) < len(want) and time.monotonic() < deadline:
            params = {"timeout_ms": 300, "max_records": 2}
            if iso:
                params["isolation"] = iso
            r = requests.get(f"{b.http}/groups/{group}/members/{member}/records", params=params, timeout=20)
            assert r.status_code == 200, r.text
            got += [x["value"] for x in r.json()["records"]]
        r = requests.get(f"{b.http}/groups/{group}/members/{member}/records",
                         params={"timeout_ms": 500, **({"isolation": iso} if iso else {})}, timeout=20)
        got += [x["value"] for x in r.json()["records"]]
        assert got == want, group
    # Bad isolation values: 400 with a JSON error, on every HTTP read.
    for path in ("/topics/rc-fix/partitions/0/records", "/topics/rc-fix/events"):
        bad = requests.get(f"{b.http}{path}", params={"isolation": "dirty"}, timeout=10)
        assert bad.status_code == 400 and "error" in bad.json(), path


def test_fixture_kill_9_and_restart_keep_read_committed_exact(broker_factory):
    # Written as a crash leaves it (no producer snapshot at the end), and without the aborted
    # index, as if the crash came between a marker and its index entry: the start replays the
    # log, finds the ABORT markers and indexes their ranges again.
    b = make_fixture_broker(broker_factory, "--no-shutdown")
    part = b.data_dir / "rc-fix-0"
    for name in os.listdir(part):
        if name.endswith(".txnindex"):
            os.remove(part / name)
    b.start()
    check_fixture_reads(b)
    assert any(n.endswith(".txnindex") for n in os.listdir(part)), "the index is written again"
    # kill -9 while serving, twice: the open transaction and the aborted ranges stay exact.
    for _ in range(2):
        b.kill()
        b.start()
        check_fixture_reads(b)
    # A clean stop writes the snapshot (the open transaction in it); the next start reads it.
    b.stop()
    b.start()
    check_fixture_reads(b)


def create_topic(b, name, partitions=1):
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in a.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(20)


def txn_producer(b, txn_id=None):
    p = Producer({
        "bootstrap.servers": b.bootstrap,
        "transactional.id": txn_id or f"rc-{uuid.uuid4()}",
        "linger.ms": 5,
    })
    p.init_transactions(30)
    return p


def run_txn(p, topic, values, commit):
    p.begin_transaction()
    for v in values:
        p.produce(topic, value=v.encode(), partition=0)
    p.flush(20)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def consume(b, topic, isolation, want, timeout=30, settle=1.5):
    """Every value a fresh consumer at `isolation` reads from the start: at least `want` of them
    (or until the timeout), then `settle` seconds more to catch anything extra."""
    c = Consumer({
        "bootstrap.servers": b.bootstrap,
        "group.id": f"g-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + timeout
    settle_until = None
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
        if len(got) >= want and settle_until is None:
            settle_until = time.monotonic() + settle
        if settle_until is not None and time.monotonic() >= settle_until:
            break
    c.close()
    return got


def http_values(b, topic, isolation=None):
    """Every value the HTTP fetch returns from offset 0, following next_offset to the end."""
    out, offset = [], 0
    for _ in range(100):
        params = {"offset": offset, "max_records": 3}
        if isolation:
            params["isolation"] = isolation
        r = requests.get(f"{b.http}/topics/{topic}/partitions/0/records", params=params, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        out += [rec["value"] for rec in body["records"]]
        if body["next_offset"] == offset:
            return out, body
        offset = body["next_offset"]
    raise AssertionError("the HTTP fetch did not reach the end")


def sse_values(b, topic, n, isolation=None, wait=1.5):
    got = []
    params = {"from": "earliest"}
    if isolation:
        params["isolation"] = isolation
    r = requests.get(f"{b.http}/topics/{topic}/events", params=params, stream=True, timeout=30)
    assert r.status_code == 200, r.text

    def read():
        try:
            for line in r.iter_lines():
                if line.startswith(b"data:"):
                    d = json.loads(line[5:])
                    if "record" in d:
                        got.append(d["record"]["value"])
        except Exception:  # noqa: BLE001 - the stream is closed below
            pass

    t = threading.Thread(target=read, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(wait)
    r.close()
    t.join(0.5)
    return list(got)


def ws_values(b, topic, n, isolation=None, wait=1.5):
    ws = ws_connect(f"ws://{b.http[len('http://'):]}/ws", open_timeout=10)
    sub = {"op": "subscribe", "topics": [topic], "from": "earliest"}
    if isolation:
        sub["isolation"] = isolation
    ws.send(json.dumps(sub))
    assert json.loads(ws.recv(10))["type"] == "subscribed"
    got = []
    deadline = time.monotonic() + 20
    quiet_until = None
    while time.monotonic() < deadline:
        try:
            m = json.loads(ws.recv(0.2))
        except TimeoutError:
            m = None
        if m and m["type"] == "record":
            got.append(m["value"])
        if len(got) >= n and quiet_until is None:
            quiet_until = time.monotonic() + wait
        if quiet_until is not None and time.monotonic() >= quiet_until:
            break
    ws.close()
    return got


def kcat_values(b, topic, isolation):
    out = subprocess.run(
        ["kcat", "-b", b.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
         "-X", f"isolation.level={isolation}", "-f", "%s\n"],
        capture_output=True, timeout=60, check=True,
    ).stdout.decode()
    return [line for line in out.splitlines() if line]


COMMITTED = ["c1", "c2", "c3", "c4"]
ALL = ["a1", "a2", "c1", "c2", "a3", "c3", "c4"]


def produce_mix(b, topic, txn_id=None):
    p = txn_producer(b, txn_id)
    run_txn(p, topic, ["a1", "a2"], commit=False)
    run_txn(p, topic, ["c1", "c2"], commit=True)
    run_txn(p, topic, ["a3"], commit=False)
    run_txn(p, topic, ["c3", "c4"], commit=True)
    return p


def test_committed_records_only_through_every_door(http_broker):
    b = http_broker
    create_topic(b, "rc-mix")
    produce_mix(b, "rc-mix")
    assert consume(b, "rc-mix", "read_committed", len(COMMITTED)) == COMMITTED
    assert consume(b, "rc-mix", "read_uncommitted", len(ALL)) == ALL
    if shutil.which("kcat"):
        assert kcat_values(b, "rc-mix", "read_committed") == COMMITTED
        assert kcat_values(b, "rc-mix", "read_uncommitted") == ALL
    # HTTP: read_committed by default, no control record, no aborted record.
    values, last = http_values(b, "rc-mix")
    assert values == COMMITTED
    assert last["last_stable_offset"] == last["high_watermark"]
    assert http_values(b, "rc-mix", "read_uncommitted")[0] == ALL
    assert http_values(b, "rc-mix", "read_committed")[0] == COMMITTED
    assert sse_values(b, "rc-mix", len(COMMITTED)) == COMMITTED
    assert sse_values(b, "rc-mix", len(ALL), "read_uncommitted") == ALL
    assert ws_values(b, "rc-mix", len(COMMITTED)) == COMMITTED
    assert ws_values(b, "rc-mix", len(ALL), "read_uncommitted") == ALL
    r = requests.get(f"{b.http}/topics/rc-mix/partitions/0/records", params={"isolation": "dirty"})
    assert r.status_code == 400 and "error" in r.json()


def test_open_transaction_holds_the_stable_offset_until_commit(http_broker):
    b = http_broker
    create_topic(b, "rc-open")
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce("rc-open", value=b"before", partition=0)
    plain.flush(10)
    p = txn_producer(b)
    p.begin_transaction()
    p.produce("rc-open", value=b"open1", partition=0)
    p.flush(10)
    # Plain records after the open transaction's first offset wait with it.
    plain.produce("rc-open", value=b"after", partition=0)
    plain.flush(10)
    assert consume(b, "rc-open", "read_committed", 1, timeout=5) == ["before"]
    assert consume(b, "rc-open", "read_uncommitted", 3) == ["before", "open1", "after"]
    values, last = http_values(b, "rc-open")
    assert values == ["before"]
    assert last["last_stable_offset"] == 1 and last["high_watermark"] == 3
    metrics = requests.get(f"{b.http}/metrics").text
    assert 'strom_last_stable_offset_lag{topic="rc-open",partition="0"} 2' in metrics
    # ListOffsets READ_COMMITTED (kafka-python's end_offsets sends its isolation level):
    # latest is the stable offset; READ_UNCOMMITTED the high watermark.
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition as KTP
    for level, want in (("read_committed", 1), ("read_uncommitted", 3)):
        kc = KafkaConsumer(bootstrap_servers=b.bootstrap, isolation_level=level)
        assert kc.end_offsets([KTP("rc-open", 0)])[KTP("rc-open", 0)] == want, level
        kc.close()
    # A read_committed long poll that waits is woken by the commit.
    woke = {}

    def waiter():
        r = requests.get(f"{b.http}/topics/rc-open/partitions/0/records",
                         params={"offset": 1, "timeout_ms": 15000}, timeout=30)
        woke["at"] = time.monotonic()
        woke["values"] = [x["value"] for x in r.json()["records"]]

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(1.0)
    committed_at = time.monotonic()
    p.commit_transaction(30)
    t.join(20)
    assert woke["values"][:2] == ["open1", "after"]
    assert woke["at"] - committed_at < 5
    assert consume(b, "rc-open", "read_committed", 3) == ["before", "open1", "after"]
    metrics = requests.get(f"{b.http}/metrics").text
    assert 'strom_last_stable_offset_lag{topic="rc-open",partition="0"} 0' in metrics


def test_kill_9_keeps_read_committed_exact(broker_factory):
    b = broker_factory(http=True)
    create_topic(b, "rc-crash")
    txn_id = f"rc-crash-{uuid.uuid4()}"
    p = produce_mix(b, "rc-crash", txn_id)
    # One more transaction left open across the crash: it must not be readable after it.
    p.begin_transaction()
    p.produce("rc-crash", value=b"open-at-crash", partition=0)
    p.flush(10)
    b.kill()
    b.start()
    assert http_values(b, "rc-crash")[0] == COMMITTED
    assert consume(b, "rc-crash", "read_committed", len(COMMITTED), timeout=10) == COMMITTED
    assert "open-at-crash" in consume(b, "rc-crash", "read_uncommitted", len(ALL) + 1)
    # A new instance with the same transactional id fences the old one and aborts its open
    # transaction: the stable offset moves to the end (it does not stick), later
    # transactions are readable.
    p2 = txn_producer(b, txn_id)
    _, last = http_values(b, "rc-crash")
    assert last["last_stable_offset"] == last["high_watermark"], last
    assert consume(b, "rc-crash", "read_committed", len(COMMITTED), timeout=10) == COMMITTED
    run_txn(p2, "rc-crash", ["after-crash"], commit=True)
    got = consume(b, "rc-crash", "read_committed", len(COMMITTED) + 1)
    assert got == COMMITTED + ["after-crash"]
