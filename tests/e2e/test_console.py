"""The web console (issue 18) in Debian's headless Chromium driven by Playwright
(`tests/e2e/js/console_test.js`, playwright-core from npm): the console lists a topic kcat
wrote, shows its records (text / JSON / hex, deep links), tails a record kcat writes live,
produces one from its form that kcat reads back, shows a consumer group's lag and resets it,
creates and deletes a topic, shows API errors, fits a phone's width, and raises no page error.
Screenshots go to target/e2e-artifacts/console/ (not committed)."""

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

pytestmark = [pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests/e2e/js"


def require_browser():
    if shutil.which("chromium") is None or shutil.which("node") is None \
            or not (JS / "node_modules/playwright-core").exists():
        pytest.skip("chromium, node or playwright-core is not installed")


def kcat(*args, data=None):
    p = subprocess.run(["kcat", *args], input=data, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_console_in_chromium_with_playwright(broker_factory):
    require_browser()
    b = broker_factory(http=True)
    # Served by the binary alone: any path under /console is the app (deep links), assets by name.
    r = requests.get(f"{b.http}/console/topics/whatever?partition=0", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    missing = requests.get(f"{b.http}/console/assets/nope.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    kcat("-P", "-b", b.bootstrap, "-t", "orders", "-K", "|",
         data=b'k1|{"id": 1, "item": "book"}\nk2|plain text\nk3|hi\n')
    # A consumer group that read one record and left: lag 2, then 3 after the tail step.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "billing", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("orders", 0, 1)], asynchronous=False)
    c.close()

    # A queue whose one record was rejected into its dead-letter topic.
    kcat("-P", "-b", b.bootstrap, "-t", "jobs", "-K", "|", "-H", "trace=abc", data=b"job-1|resize image 7\n")
    cfg = requests.post(f"{b.http}/queues/workers/config", timeout=10, json={"configs": {
        "share.auto.offset.reset": "earliest", "errors.deadletterqueue.topic.name": "jobs.dlq"}})
    assert cfg.status_code == 200, cfg.text
    got = requests.post(f"{b.http}/queues/workers/receive", timeout=30,
                        json={"topics": ["jobs"], "max_records": 1, "wait_ms": 5000}).json()["records"]
    assert len(got) == 1
    rejected = requests.post(f"{b.http}/queues/workers/ack", timeout=10,
                             json={"acks": [{"receipt": got[0]["receipt"], "type": "reject"}]})
    assert rejected.status_code == 200, rejected.text
    deadline = time.monotonic() + 20
    while not any(t["name"] == "jobs.dlq" for t in requests.get(f"{b.http}/topics", timeout=10).json()["topics"]):
        assert time.monotonic() < deadline, "no dead-letter topic"
        time.sleep(0.1)

    artifacts = ROOT / "target/e2e-artifacts/console"
    p = subprocess.run(["node", str(JS / "console_test.js"), b.http, b.bootstrap, str(artifacts)],
                       capture_output=True, text=True, timeout=200)
    print(p.stdout)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    assert p.stdout.strip().endswith("ok")



def test_groups_api_behind_the_console(broker_factory):
    """GET /groups, GET /groups/{g} and POST /groups/{g}/offsets/reset against a group that
    confluent-kafka consumes in: members and assignment while it runs, 409 for a reset then,
    lag after it leaves, a reset to earliest / a time / latest that the consumer's own
    committed() then reads, and 4xx JSON for bad input."""
    import time
    from confluent_kafka import Producer
    b = broker_factory(http=True)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(10):
        p.produce("ledger", value=b"r%d" % i, partition=0)
    assert p.flush(30) == 0
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(10, 20):
        p.produce("ledger", value=b"r%d" % i, partition=0)
    assert p.flush(30) == 0

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "ledger-readers", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "client.id": "reader-1"})
    c.subscribe(["ledger"])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 5 and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m)
    c.commit(message=got[4], asynchronous=False)  # next offset 5
    listed = requests.get(f"{b.http}/groups", timeout=10).json()["groups"]
    assert {"group": "ledger-readers", "type": "classic", "protocol_type": "consumer", "state": "Stable"} in listed
    g = requests.get(f"{b.http}/groups/ledger-readers", timeout=10).json()
    assert [(m["client_id"], m["assignment"]) for m in g["members"]] == [("reader-1", [{"topic": "ledger", "partitions": [0]}])]
    assert [(o["committed"], o["log_end_offset"], o["lag"]) for o in g["offsets"]] == [(5, 20, 15)]
    busy = requests.post(f"{b.http}/groups/ledger-readers/offsets/reset", json={"to": "earliest"}, timeout=10)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "group_not_empty"
    c.close()

    def reset(to):
        r = requests.post(f"{b.http}/groups/ledger-readers/offsets/reset", json={"to": to}, timeout=10)
        assert r.status_code == 200, r.text
        reader = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "ledger-readers"})
        try:
            return reader.committed([TopicPartition("ledger", 0)], timeout=10)[0].offset
        finally:
            reader.close()

    assert reset("earliest") == 0
    assert reset(f"time:{middle}") == 10
    assert reset("latest") == 20
    assert requests.get(f"{b.http}/groups/ledger-readers", timeout=10).json()["lag"] == 0

    for body, status in (({"to": "yesterday"}, 400), ({"to": "time:-5"}, 400), ({"nope": 1}, 400),
                         ({"to": "earliest", "topic": "missing"}, 404)):
        r = requests.post(f"{b.http}/groups/ledger-readers/offsets/reset", json=body, timeout=10)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert r.json()["error"]["message"]
    r = requests.post(f"{b.http}/groups/ledger-readers/offsets/reset", data=b"{not json", timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    missing = requests.get(f"{b.http}/groups/no-such-group", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "group_id_not_found"


def test_topic_configs_and_partitions_over_http(broker_factory):
    """PATCH /topics/{t}/configs and POST /topics/{t}/partitions (the console's topic edits),
    checked through confluent-kafka's AdminClient; bad input is a 4xx JSON and changes nothing."""
    from confluent_kafka.admin import ConfigResource
    b = broker_factory(http=True)
    assert requests.post(f"{b.http}/topics", json={"name": "edits", "partitions": 1}, timeout=10).status_code == 201
    admin = AdminClient({"bootstrap.servers": b.bootstrap})

    def retention():
        res = ConfigResource(ConfigResource.Type.TOPIC, "edits")
        return admin.describe_configs([res])[res].result(timeout=10)["retention.ms"].value

    r = requests.patch(f"{b.http}/topics/edits/configs", json={"configs": {"retention.ms": "3600000"}}, timeout=10)
    assert r.status_code == 200 and r.json()["configs"]["retention.ms"] == "3600000"
    assert retention() == "3600000"
    bad = requests.patch(f"{b.http}/topics/edits/configs", timeout=10,
                         json={"configs": {"retention.ms": "60000", "segment.bytes": "tiny"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_config"
    assert retention() == "3600000"  # all or nothing
    back = requests.patch(f"{b.http}/topics/edits/configs", json={"configs": {"retention.ms": None}}, timeout=10)
    assert back.status_code == 200 and retention() == "604800000"

    r = requests.post(f"{b.http}/topics/edits/partitions", json={"count": 4}, timeout=10)
    assert r.status_code == 200 and len(r.json()["partitions"]) == 4
    assert len(admin.list_topics(timeout=10).topics["edits"].partitions) == 4
    for body, status, code in (({"count": 2}, 400, "invalid_partitions"), ({"count": "x"}, 400, "invalid_json"),
                               ({}, 400, "invalid_json")):
        r = requests.post(f"{b.http}/topics/edits/partitions", json=body, timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert requests.post(f"{b.http}/topics/nope/partitions", json={"count": 2}, timeout=10).status_code == 404
    assert requests.patch(f"{b.http}/topics/nope/configs", json={"configs": {}}, timeout=10).status_code == 404


def test_redrive_refuses_what_is_not_a_dead_letter(broker_factory):
    """POST /topics/{t}/partitions/{p}/records/{o}/redrive answers 4xx JSON for a record
    without `_dlq.errors.original.topic`, an offset past the end, an unknown topic or partition,
    and writes nothing."""
    b = broker_factory(http=True)
    kcat("-P", "-b", b.bootstrap, "-t", "plain", data=b"not a dead letter\n")
    for path, status in (("plain/partitions/0/records/0", 400), ("plain/partitions/0/records/9", 400),
                         ("nope/partitions/0/records/0", 404), ("plain/partitions/7/records/0", 404)):
        r = requests.post(f"{b.http}/topics/{path}/redrive", timeout=10)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert r.json()["error"]["message"]
    out = kcat("-C", "-b", b.bootstrap, "-t", "plain", "-o", "beginning", "-e", "-f", "%s\n")
    assert out == b"not a dead letter\n"


def test_fetch_by_time(broker_factory):
    """GET /topics/{t}/partitions/{p}/records?time_ms=T starts at the first record stamped at
    or after T (the console's browse by time); 400 for both offset and time_ms or a negative
    time."""
    from confluent_kafka import Producer
    b = broker_factory(http=True)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i, ts in enumerate((1_000_000, 2_000_000, 3_000_000)):
        p.produce("stamped", value=b"v%d" % i, partition=0, timestamp=ts)
    assert p.flush(30) == 0
    url = f"{b.http}/topics/stamped/partitions/0/records"
    got = requests.get(url, params={"time_ms": 1_500_000}, timeout=10).json()["records"]
    assert [(r["offset"], r["timestamp"]) for r in got] == [(1, 2_000_000), (2, 3_000_000)]
    assert requests.get(url, params={"time_ms": 9_000_000}, timeout=10).json()["records"] == []
    for params in ({"time_ms": 1, "offset": 0}, {"time_ms": -3}, {"time_ms": "soon"}):
        r = requests.get(url, params=params, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["message"], (params, r.text)


def test_console_respects_the_http_doors_auth(broker_factory):
    """With `--http-auth required` the console is refused without credentials (401 + Basic
    challenge) and works with a user's (Chromium answering the challenge, Playwright)."""
    require_browser()
    from conftest import strom_bin
    b = broker_factory("--http-auth", "required", start=False, http=True)
    password = "console-" + uuid.uuid4().hex
    subprocess.run([strom_bin(), "user", "set", "admin", "--mechanism", "SCRAM-SHA-256", "--password-stdin",
                    "--data-dir", str(b.data_dir)], input=password.encode(), check=True, timeout=60)
    b.start()
    kcat("-P", "-b", b.bootstrap, "-t", "secured", data=b"for admins only\n")
    refused = requests.get(f"{b.http}/console", timeout=10)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith('Basic realm="strom"')
    assert requests.get(f"{b.http}/console", auth=("admin", password), timeout=10).status_code == 200
    p = subprocess.run(["node", str(JS / "console_auth_test.js"), b.http, "admin", password],
                       capture_output=True, text=True, timeout=120)
    print(p.stdout)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    assert p.stdout.strip().endswith("ok")
    assert password not in b.log


def test_groups_api_shows_a_kip848_group(broker_factory):
    """A confluent-kafka consumer with group.protocol=consumer (KIP-848) appears in GET /groups
    as a `consumer` group, and GET /groups/{g} shows its member, assignment and lag."""
    import time
    from confluent_kafka import Producer
    b = broker_factory(http=True)
    requests.post(f"{b.http}/topics", json={"name": "k848", "partitions": 2}, timeout=10)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(6):
        p.produce("k848", value=b"v%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "new-protocol", "group.protocol": "consumer",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "client.id": "kip848-reader"})
    c.subscribe(["k848"])
    try:
        got, deadline = [], time.monotonic() + 30
        while len(got) < 6 and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m)
        assert len(got) == 6
        c.commit(offsets=[TopicPartition("k848", 0, 1), TopicPartition("k848", 1, 3)], asynchronous=False)
        listed = {g["group"]: g for g in requests.get(f"{b.http}/groups", timeout=10).json()["groups"]}
        assert listed["new-protocol"]["type"] == "consumer"
        g = requests.get(f"{b.http}/groups/new-protocol", timeout=10).json()
        assert [(m["client_id"], m["assignment"]) for m in g["members"]] == \
            [("kip848-reader", [{"topic": "k848", "partitions": [0, 1]}])]
        assert [(o["partition"], o["committed"], o["lag"]) for o in g["offsets"]] == [(0, 1, 2), (1, 3, 0)]
        assert g["lag"] == 2
    finally:
        c.close()
