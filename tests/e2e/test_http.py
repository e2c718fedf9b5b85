"""The HTTP door: REST, SSE, WebSocket, metrics, with `requests`, `websockets` and
confluent-kafka for the cross-door checks."""

import base64
import json
import threading
import time

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from websockets.sync.client import connect as ws_connect


pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def http_broker(broker_factory):
    return broker_factory(http=True)


def create(b, name, partitions=1, configs=None):
    r = requests.post(f"{b.http}/topics", json={"name": name, "partitions": partitions, "configs": configs or {}})
    assert r.status_code == 201, r.text
    return r.json()


def hw(b, topic):
    return [p["log_end_offset"] for p in requests.get(f"{b.http}/topics/{topic}").json()["partitions"]]


def test_topics_produce_fetch_round_trip(http_broker):
    b = http_broker
    create(b, "h-rt", 3, {"retention.ms": "3600000"})
    assert "h-rt" in [t["name"] for t in requests.get(f"{b.http}/topics").json()["topics"]]
    d = requests.get(f"{b.http}/topics/h-rt").json()
    assert len(d["partitions"]) == 3 and d["configs"]["retention.ms"] == "3600000"
    r = requests.post(f"{b.http}/topics/h-rt/records", json={"records": [
        {"key": "k1", "value": "text value", "headers": [["h", "1"], ["h", "2"]]}]})
    assert r.status_code == 200, r.text
    p = r.json()["offsets"][0]["partition"]
    rec = requests.get(f"{b.http}/topics/h-rt/partitions/{p}/records").json()["records"][0]
    assert (rec["key"], rec["value"], rec["headers"]) == ("k1", "text value", [["h", "1"], ["h", "2"]])
    other = (p + 1) % 3
    r = requests.post(f"{b.http}/topics/h-rt/records", json={"records": [
        {"value": "second", "partition": other}, {"key": None, "value": None, "partition": other}]})
    assert r.json()["offsets"] == [{"partition": other, "offset": 0}, {"partition": other, "offset": 1}]
    got = requests.get(f"{b.http}/topics/h-rt/partitions/{other}/records", params={"offset": 0}).json()
    assert [x["value"] for x in got["records"]] == ["second", None]
    assert got["next_offset"] == 2 and got["high_watermark"] == 2
    # JSON and base64 values.
    r = requests.post(f"{b.http}/topics/h-rt/records", json={"value_format": "json", "records": [
        {"value": {"a": [1, 2]}, "partition": 0}]})
    o = r.json()["offsets"][0]["offset"]
    got = requests.get(f"{b.http}/topics/h-rt/partitions/0/records", params={"offset": o, "format": "json"}).json()
    assert got["records"][0]["value"] == {"a": [1, 2]}
    raw = bytes(range(256))
    r = requests.post(f"{b.http}/topics/h-rt/records", json={"value_format": "base64", "records": [
        {"value": base64.b64encode(raw).decode(), "partition": 1}]})
    o = r.json()["offsets"][0]["offset"]
    got = requests.get(f"{b.http}/topics/h-rt/partitions/1/records", params={"offset": o, "format": "base64"}).json()
    assert base64.b64decode(got["records"][0]["value"]) == raw
    assert requests.delete(f"{b.http}/topics/h-rt").status_code == 204
    assert requests.get(f"{b.http}/topics/h-rt").status_code == 404


def test_http_to_kafka_same_partition_and_bytes(http_broker):
    b = http_broker
    create(b, "h2k", 6)
    keys = [f"user-{i}" for i in range(40)]
    r = requests.post(f"{b.http}/topics/h2k/records", json={"records": [
        {"key": k, "value": f"v-{k}", "headers": {"src": "http"}} for k in keys]})
    http_part = {k: o["partition"] for k, o in zip(keys, r.json()["offsets"])}
    # librdkafka's murmur2_random is Kafka's Java default partitioner.
    p = Producer({"bootstrap.servers": b.bootstrap, "partitioner": "murmur2_random"})
    delivered = {}
    for k in keys:
        p.produce("h2k", key=k.encode(), value=b"x", on_delivery=lambda e, m: delivered.__setitem__(m.key().decode(), m.partition()))
    assert p.flush(20) == 0
    assert delivered == http_part, "the HTTP door and a Kafka client chose different partitions"
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "h2k", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("h2k", i, 0) for i in range(6)])
    seen = {}
    deadline = time.monotonic() + 30
    while len(seen) < 40 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error() and m.value() != b"x":
            seen[m.key().decode()] = (m.partition(), m.value(), m.headers())
    c.close()
    assert seen == {k: (http_part[k], f"v-{k}".encode(), [("src", b"http")]) for k in keys}


def test_kafka_to_http_fetch_sse_and_websocket(http_broker):
    b = http_broker
    create(b, "k2h", 1)
    payloads = [bytes([i, 0, 255, i]) * 5 for i in range(20)]
    # Subscribe before producing: pushes arrive as records land.
    ws = ws_connect(f"ws://{b.http[len('http://'):]}/ws", open_timeout=10)
    ws.send(json.dumps({"op": "subscribe", "topics": ["k2*"], "from": "latest", "format": "base64"}))
    assert json.loads(ws.recv(10))["type"] == "subscribed"
    sse_lines = []

    def read_sse():
        with requests.get(f"{b.http}/topics/k2h/events", params={"from": "earliest", "format": "base64"},
                          stream=True, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith(b"data:"):
                    sse_lines.append(json.loads(line[5:]))
                if len(sse_lines) >= 20:
                    return

    t = threading.Thread(target=read_sse, daemon=True)
    t.start()
    time.sleep(0.5)
    p = Producer({"bootstrap.servers": b.bootstrap, "compression.type": "lz4", "linger.ms": 5})
    for i, v in enumerate(payloads):
        p.produce("k2h", key=f"k{i}".encode(), value=v, partition=0)
    assert p.flush(20) == 0
    pushed = []
    while len(pushed) < 20:
        m = json.loads(ws.recv(20))
        if m["type"] == "record":
            pushed.append(m)
    ws.close()
    assert [base64.b64decode(m["value"]) for m in pushed] == payloads
    assert [m["offset"] for m in pushed] == list(range(20))
    t.join(20)
    assert [base64.b64decode(e["record"]["value"]) for e in sse_lines] == payloads
    got = requests.get(f"{b.http}/topics/k2h/partitions/0/records", params={"format": "base64", "max_records": 100}).json()
    assert [base64.b64decode(r["value"]) for r in got["records"]] == payloads


def test_websocket_produce_reaches_kafka(http_broker):
    b = http_broker
    create(b, "ws-in", 1)
    with ws_connect(f"ws://{b.http[len('http://'):]}/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "produce", "topic": "ws-in", "records": [{"value": "chat-1"}, {"value": "chat-2"}]}))
        reply = json.loads(ws.recv(10))
        assert reply["type"] == "produced" and [o["offset"] for o in reply["offsets"]] == [0, 1]
        ws.send("not json")
        assert json.loads(ws.recv(10))["type"] == "error"
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "ws-in", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("ws-in", 0, 0)])
    vals = []
    deadline = time.monotonic() + 20
    while len(vals) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            vals.append(m.value())
    c.close()
    assert vals == [b"chat-1", b"chat-2"]


def test_sse_resumes_from_last_event_id(http_broker):
    b = http_broker
    create(b, "resume", 2)
    requests.post(f"{b.http}/topics/resume/records", json={"records": [
        {"value": f"r{i}", "partition": i % 2} for i in range(10)]})
    events = []
    with requests.get(f"{b.http}/topics/resume/events", params={"from": "earliest"}, stream=True, timeout=20) as r:
        ev = {}
        for line in r.iter_lines():
            if line.startswith(b"id:"):
                ev["id"] = line[3:].strip().decode()
            elif line.startswith(b"data:"):
                ev["data"] = json.loads(line[5:])
                events.append(ev)
                ev = {}
            if len(events) == 4:
                break
    last = events[-1]["id"]
    first_four = [e["data"]["record"]["value"] for e in events]
    with requests.get(f"{b.http}/topics/resume/events", headers={"Last-Event-ID": last}, stream=True, timeout=20) as r:
        rest = []
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                rest.append(json.loads(line[5:])["record"]["value"])
            if len(rest) == 6:
                break
    assert sorted(first_four + rest) == sorted(f"r{i}" for i in range(10)), "a resume lost or repeated a record"


@pytest.mark.parametrize("body,status,code", [
    (b"{not json", 400, "invalid_json"),
    (json.dumps({"records": [{"value": 5}]}).encode(), 400, "invalid_request"),
    (json.dumps({"records": [{"value": "%%%"}], "value_format": "base64"}).encode(), 400, "invalid_base64"),
    (json.dumps({"records": [{"value": "x", "partition": 9}]}).encode(), 404, "unknown_topic_or_partition"),
    (json.dumps({"records": []}).encode(), 400, "invalid_request"),
    (json.dumps({"rekords": []}).encode(), 400, "invalid_json"),
    (json.dumps({"records": [{"value": "x", "headers": 7}]}).encode(), 400, "invalid_request"),
])
def test_bad_input_is_a_4xx_json_error_and_writes_nothing(http_broker, body, status, code):
    b = http_broker
    create(b, "strict", 1)
    r = requests.post(f"{b.http}/topics/strict/records", data=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert hw(b, "strict") == [0]


def test_unknown_topic_too_large_body_and_bad_queries(http_broker):
    b = http_broker
    create(b, "lim", 1, {"max.message.bytes": "1024"})
    r = requests.post(f"{b.http}/topics/nope/records", json={"records": [{"value": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_topic_or_partition"
    r = requests.post(f"{b.http}/topics/lim/records", data=b"{" + b" " * (9 << 20) + b"}",
                      headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = requests.post(f"{b.http}/topics/lim/records", json={"records": [{"value": "x" * 4000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "message_too_large"
    r = requests.get(f"{b.http}/topics/lim/partitions/0/records", params={"offset": "abc"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = requests.get(f"{b.http}/topics/lim/partitions/0/records", params={"offset": 99})
    assert r.status_code == 416 and r.json()["error"]["code"] == "offset_out_of_range"
    r = requests.post(f"{b.http}/topics", json={"name": "bad/name"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_topic"
    r = requests.post(f"{b.http}/topics", json={"name": "lim"})
    assert r.status_code == 409
    assert requests.get(f"{b.http}/no/such/path").status_code == 404
    assert hw(b, "lim") == [0]


def test_metrics_health_and_openapi(http_broker):
    b = http_broker
    create(b, "met", 2)
    requests.post(f"{b.http}/topics/met/records", json={"records": [{"value": "a", "partition": 1}]})
    text = requests.get(f"{b.http}/metrics").text
    assert 'strom_log_end_offset{topic="met",partition="1"} 1' in text
    assert 'strom_http_requests_total{route="/topics/{topic}/records",method="POST",status="200"} 1' in text
    assert "strom_http_bytes_in_total{topic=\"met\"}" in text
    assert requests.get(f"{b.http}/healthz").json()["status"] == "ok"
    assert requests.get(f"{b.http}/readyz").status_code == 200
    doc = requests.get(f"{b.http}/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/topics/{topic}/records" in doc["paths"]


def poll_until(b, group, member, want, timeout=60):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        r = requests.get(f"{b.http}/groups/{group}/members/{member}/records", params={"timeout_ms": 500}, timeout=40)
        assert r.status_code == 200, r.text
        got += r.json()["records"]
    return got


def test_http_group_member_commits_and_resumes(http_broker):
    b = http_broker
    create(b, "hg", 2)
    requests.post(f"{b.http}/topics/hg/records", json={"records": [{"value": f"m{i}", "partition": i % 2} for i in range(100)]})
    r = requests.post(f"{b.http}/groups/hg-g/members", json={"topics": ["hg"], "from": "earliest", "session_timeout_ms": 10000})
    assert r.status_code == 201, r.text
    member = r.json()["member_id"]
    assert sorted(a["partition"] for a in r.json()["assignment"]) == [0, 1]
    got = poll_until(b, "hg-g", member, 100)
    assert sorted(x["value"] for x in got) == sorted(f"m{i}" for i in range(100))
    assert requests.post(f"{b.http}/groups/hg-g/members/{member}/commit").status_code == 200
    assert requests.delete(f"{b.http}/groups/hg-g/members/{member}").status_code == 204
    # Visible to Kafka tools: committed offsets of the group.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "hg-g"})
    committed = c.committed([TopicPartition("hg", 0), TopicPartition("hg", 1)], timeout=10)
    c.close()
    assert [tp.offset for tp in committed] == [50, 50]
    # A new member resumes at the committed offsets.
    requests.post(f"{b.http}/topics/hg/records", json={"records": [{"value": "late", "partition": 1}]})
    r = requests.post(f"{b.http}/groups/hg-g/members", json={"topics": ["hg"], "from": "earliest"})
    member = r.json()["member_id"]
    assert [x["value"] for x in poll_until(b, "hg-g", member, 1)] == ["late"]
    r = requests.get(f"{b.http}/groups/hg-g/members/nobody/records")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_member"
    r = requests.post(f"{b.http}/groups/hg-g/members", json={"topics": ["missing"]})
    assert r.status_code == 404


def test_http_and_kafka_members_share_one_group(http_broker):
    b = http_broker
    create(b, "mixed", 4)
    r = requests.post(f"{b.http}/groups/mix-g/members", json={"topics": ["mixed"], "from": "earliest", "session_timeout_ms": 10000})
    member = r.json()["member_id"]
    stop = threading.Event()
    kafka_owned = []

    def kafka_member():
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "mix-g", "auto.offset.reset": "earliest",
                      "session.timeout.ms": 10000, "partition.assignment.strategy": "range"})
        c.subscribe(["mixed"])
        while not stop.is_set():
            c.poll(0.1)
            kafka_owned[:] = sorted(p.partition for p in c.assignment())
        c.close()

    t = threading.Thread(target=kafka_member, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    http_owned = []
    while time.monotonic() < deadline:
        r = requests.get(f"{b.http}/groups/mix-g/members/{member}/records", params={"timeout_ms": 200}, timeout=40)
        assert r.status_code == 200, r.text
        http_owned = sorted(a["partition"] for a in r.json()["assignment"])
        if kafka_owned and http_owned and sorted(kafka_owned + http_owned) == [0, 1, 2, 3]:
            break
    stop.set()
    t.join(20)
    assert len(http_owned) == 2 and len(kafka_owned) == 2 and not set(http_owned) & set(kafka_owned)


def test_schemathesis_finds_no_server_error(http_broker, tmp_path):
    """schemathesis generates requests from /openapi.json; a client's input is never a 5xx."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    b = http_broker
    create(b, "fuzz", 2)
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is not installed (scripts/setup)"
    p = subprocess.run([exe, "run", f"{b.http}/openapi.json", "--checks", "not_a_server_error",
                        "--max-examples", "30", "--seed", "20261124", "--exclude-path", "/ws",
                        "--exclude-path", "/topics/{topic}/events"],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert requests.get(f"{b.http}/healthz").status_code == 200


def test_metrics_cover_the_kafka_door_fsync_and_group_lag(http_broker):
    import re

    b = http_broker
    create(b, "kmet", 1, {"flush.messages": "1"})
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce("kmet", value=f"v{i}".encode(), partition=0)
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kmet-g", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("kmet", 0, 4)], asynchronous=False)
    c.close()
    text = requests.get(f"{b.http}/metrics").text

    def value(pattern):
        m = re.search(pattern + r" (\d+(?:\.\d+)?)\n", text)
        assert m, f"{pattern} missing from /metrics"
        return float(m.group(1))

    assert value(r'strom_requests_total\{door="kafka",api="Produce"\}') >= 1
    assert value(r'strom_fsync_duration_seconds_count\{\}') >= 1
    assert value(r'strom_topic_bytes_in_total\{topic="kmet"\}') > 0
    assert value(r'strom_group_lag\{group="kmet-g",topic="kmet",partition="0"\}') == 6
    assert value(r"strom_records_in_total") >= 10
    assert 'strom_open_connections{door="kafka"}' in text
    assert "strom_group_rebalances_total" in text


def test_websocket_group_member_shares_partitions_and_leaves_on_close(http_broker):
    b = http_broker
    create(b, "wsg", 2)
    ws = ws_connect(f"ws://{b.http[len('http://'):]}/ws", open_timeout=10)
    ws.send(json.dumps({"op": "subscribe", "topics": ["wsg"], "group": "wsg-g", "from": "earliest"}))
    assert json.loads(ws.recv(10))["type"] == "subscribed"
    first = json.loads(ws.recv(30))
    assert first["type"] == "assigned" and sorted(a["partition"] for a in first["assignment"]) == [0, 1]
    requests.post(f"{b.http}/topics/wsg/records", json={"records": [{"value": f"w{i}", "partition": i % 2} for i in range(20)]})
    got = []
    while len(got) < 20:
        m = json.loads(ws.recv(20))
        if m["type"] == "record":
            got.append(m["value"])
    assert sorted(got) == sorted(f"w{i}" for i in range(20))
    # Committed as pushed: visible to Kafka clients of the group.
    deadline = time.monotonic() + 10
    while True:
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wsg-g"})
        committed = [tp.offset for tp in c.committed([TopicPartition("wsg", 0), TopicPartition("wsg", 1)], timeout=10)]
        c.close()
        if committed == [10, 10] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert committed == [10, 10]
    ws.close()
    # The socket's member left: the group is empty again (no session timeout to wait for).
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": b.bootstrap})  # alive while its futures resolve
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        d = admin.describe_consumer_groups(["wsg-g"])["wsg-g"].result(timeout=10)
        if not d.members:
            break
        time.sleep(0.2)
    assert not d.members, "the WebSocket member did not leave the group"


def test_slow_websocket_client_is_closed_with_1013_and_the_broker_is_fine(broker_factory):
    from websockets.exceptions import ConnectionClosed

    b = broker_factory("--ws-buffer-records", "8", http=True)
    create(b, "burst", 1)
    ws = ws_connect(f"ws://127.0.0.1:{b.http_port}/ws", open_timeout=10)
    ws.send(json.dumps({"op": "subscribe", "topics": ["burst"], "from": "earliest"}))
    assert json.loads(ws.recv(10))["type"] == "subscribed"
    big = "x" * 20000
    for _ in range(8):  # 8 batches of 40 × 20 KB, under max.message.bytes
        r = requests.post(f"{b.http}/topics/burst/records", json={"records": [{"value": big} for _ in range(40)]})
        assert r.status_code == 200, r.text
    with pytest.raises(ConnectionClosed) as e:
        while True:
            ws.recv(30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1013, e.value
    assert requests.get(f"{b.http}/healthz").status_code == 200
    assert hw(b, "burst") == [320]


def test_websocket_group_member_commits_on_request(http_broker):
    b = http_broker
    create(b, "wsc", 1)
    requests.post(f"{b.http}/topics/wsc/records", json={"records": [{"value": f"c{i}"} for i in range(10)]})
    with ws_connect(f"ws://{b.http[len('http://'):]}/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "topics": ["wsc"], "group": "wsc-g", "from": "earliest",
                            "auto_commit": False}))
        got = []
        while len(got) < 10:
            m = json.loads(ws.recv(20))
            if m["type"] == "record":
                got.append(m["value"])
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wsc-g"})
        assert c.committed([TopicPartition("wsc", 0)], timeout=10)[0].offset < 0, "committed before the client asked"
        ws.send(json.dumps({"op": "commit"}))
        while True:
            m = json.loads(ws.recv(20))
            if m["type"] == "committed":
                break
        assert m["groups"][0]["committed"] == [{"topic": "wsc", "partition": 0, "offset": 10}]
        assert c.committed([TopicPartition("wsc", 0)], timeout=10)[0].offset == 10
        c.close()
        # The socket's membership is visible to Kafka admin tools.
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        d = admin.describe_consumer_groups(["wsc-g"])["wsc-g"].result(timeout=10)
        assert [m.client_id for m in d.members] == ["strom-http"]
