"""HTTP auth (issue 16, item 5): HTTP Basic with the SCRAM users of `strom user set`, bearer
tokens of `strom token create NAME --user U --ttl 30d` (stored hashed, revocable, expiring) in
the Authorization header or a `token` query parameter, `--http-auth required`,
`--metrics-auth required`, and the ACL authorizer on every HTTP route (401 for an anonymous
caller, 403 for an authenticated one, JSON bodies, `WWW-Authenticate`). Real clients: curl
against the HTTPS door (`--http-tls true`), the `websockets` library, confluent-kafka for the
Kafka side, and Debian's Chromium running a page that subscribes over WebSocket with a token.
Secrets never appear in the broker's log."""

import base64
import json
import shutil
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from confluent_helpers import produce
from conftest import free_port, strom_bin

pytestmark = [pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "http-Pa55-w0rd"
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def cli(*args, password=None, timeout=60):
    p = subprocess.run([strom_bin(), *map(str, args)], capture_output=True, timeout=timeout,
                       input=(password + "\n").encode() if password is not None else None)
    return p


def make_user(data_dir, name):
    p = cli("user", "set", name, "--password-stdin", "--data-dir", data_dir, password=PASSWORD)
    assert p.returncode == 0, p.stderr


def make_token(data_dir, name, user, ttl="1h"):
    p = cli("token", "create", name, "--user", user, "--ttl", ttl, "--data-dir", data_dir)
    assert p.returncode == 0, p.stderr
    token = p.stdout.decode().strip()
    assert token.startswith("strom_"), p.stdout
    return token


def acl_add(data_dir, *args):
    p = cli("acl", "add", "--data-dir", data_dir, *args)
    assert p.returncode == 0, p.stderr


class Curl:
    """curl against the HTTPS door, trusting the test CA."""

    def __init__(self, base, ca):
        self.base, self.ca = base, ca

    def __call__(self, method, path, *args, body=None):
        cmd = ["curl", "-sS", "--max-time", "20", "--cacert", str(self.ca), "-X", method,
               "-D", "-", f"{self.base}{path}", *args]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        p = subprocess.run(cmd, capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr
        head, _, payload = p.stdout.decode().partition("\r\n\r\n")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        return status, headers, (json.loads(payload) if payload.strip().startswith(("{", "[")) else payload)


def wait_healthy(curl):
    deadline = time.monotonic() + 20
    while True:
        try:
            status, _, _ = curl("GET", "/healthz")
            if status == 200:
                return
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the HTTPS door did not answer /healthz")
        time.sleep(0.2)


@pytest.fixture
def secured(broker_factory, tmp_path):
    """HTTPS door with --http-auth required, --metrics-auth required and the ACL authorizer;
    User:admin a super user; alice and bob made offline before the start."""
    certs = tmp_path / "certs"
    subprocess.run([str(REPO / "scripts" / "test-certs"), str(certs)], check=True, timeout=60)
    port = free_port()
    b = broker_factory("--authorizer", "acl", "--super-users", "User:admin", "--http-auth",
                       "required", "--metrics-auth", "required", start=False,
                       http_addr=f"127.0.0.1:{port}", http_tls=True,
                       tls_cert=certs / "server.pem", tls_key=certs / "server.key")
    for name in ("admin", "alice", "bob"):
        make_user(b.data_dir, name)
    b.start()
    b.curl = Curl(f"https://127.0.0.1:{port}", certs / "ca.pem")
    wait_healthy(b.curl)
    return b


def basic(user, password=PASSWORD):
    return ["-u", f"{user}:{password}"]


def bearer(token):
    return ["-H", f"Authorization: Bearer {token}"]


@needs_curl
def test_basic_and_bearer_over_https_with_curl(secured):
    b, curl = secured, secured.curl
    # Open whatever the settings: probes and the API description.
    assert curl("GET", "/healthz")[0] == 200
    assert curl("GET", "/openapi.json")[0] == 200
    # No credentials: 401 with a challenge and a JSON body, on REST and on /metrics.
    for path in ("/topics", "/metrics", "/topics/x/partitions/0/records?offset=0"):
        status, headers, body = curl("GET", path)
        assert status == 401, (path, body)
        assert 'Basic realm="strom"' in headers["www-authenticate"]
        assert 'Bearer realm="strom"' in headers["www-authenticate"]
        assert body["error"]["code"] == "unauthenticated"
    # A wrong password, an unknown user, a malformed header, an unknown token: 401.
    for args in (basic("alice", "wrong"), basic("nobody"), ["-H", "Authorization: Basic !!"],
                 ["-H", "Authorization: Digest x"], bearer("strom_not-a-token")):
        status, _, body = curl("GET", "/topics", *args)
        assert status == 401 and body["error"]["code"] == "unauthenticated", (args, body)
    # The super user creates a topic with Basic; alice, without an ACL, is forbidden (403).
    status, _, body = curl("POST", "/topics", *basic("admin"), body={"name": "orders", "partitions": 1})
    assert status == 201, body
    status, headers, body = curl("POST", "/topics/orders/records", *basic("alice"),
                                 body={"records": [{"value": "nope"}]})
    assert status == 403 and body["error"]["code"] == "forbidden", body
    assert "User:alice" in body["error"]["message"] and "WRITE" in body["error"]["message"]
    assert "www-authenticate" not in headers
    # ACLs made offline reach the running broker within a second: alice may write, bob read.
    acl_add(b.data_dir, "--allow-principal", "User:alice", "--operation", "Write", "--topic", "orders")
    acl_add(b.data_dir, "--allow-principal", "User:bob", "--operation", "Read", "--topic", "orders")
    time.sleep(1.5)
    status, _, body = curl("POST", "/topics/orders/records", *basic("alice"),
                           body={"records": [{"value": "o1"}, {"value": "o2"}]})
    assert status == 200, body
    assert [o["offset"] for o in body["offsets"]] == [0, 1]
    # bob reads with a bearer token, in the header and as ?token=; he may not write.
    token = make_token(b.data_dir, "bob-ci", "bob")
    for args, query in ((bearer(token), ""), ([], f"&token={token}")):
        status, _, body = curl("GET", f"/topics/orders/partitions/0/records?offset=0{query}", *args)
        assert status == 200, body
        assert [r["value"] for r in body["records"]] == ["o1", "o2"]
    status, _, body = curl("POST", "/topics/orders/records", *bearer(token), body={"records": [{"value": "x"}]})
    assert status == 403, body
    # Listing hides what a principal may not describe; bob's READ implies DESCRIBE.
    curl("POST", "/topics", *basic("admin"), body={"name": "secret", "partitions": 1})
    status, _, body = curl("GET", "/topics", *bearer(token))
    assert status == 200 and [t["name"] for t in body["topics"]] == ["orders"], body
    status, _, body = curl("DELETE", "/topics/orders", *bearer(token))
    assert status == 403, body
    # /metrics needs credentials and DESCRIBE on the cluster (the super user has it).
    assert curl("GET", "/metrics", *bearer(token))[0] == 403
    status, _, text = curl("GET", "/metrics", *basic("admin"))
    assert status == 200
    failures = [l for l in text.splitlines() if l.startswith("strom_http_authentication_failures_total ")]
    assert failures and int(failures[0].split()[1]) >= 8, failures
    # Revoked: the token stops working within a second, on a running broker.
    p = cli("token", "revoke", "bob-ci", "--data-dir", b.data_dir)
    assert p.returncode == 0, p.stderr
    time.sleep(1.5)
    status, headers, body = curl("GET", "/topics", *bearer(token))
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"], body
    # Expired: its own code and the RFC 6750 challenge.
    short = make_token(b.data_dir, "short", "bob", ttl="1s")
    time.sleep(2.5)
    status, headers, body = curl("GET", "/topics", *bearer(short))
    assert status == 401 and body["error"]["code"] == "token_expired", body
    assert 'error="invalid_token"' in headers["www-authenticate"]
    # The list shows names and users, never a token; the file holds only hashes.
    listed = json.loads(cli("token", "list", "--json", "--data-dir", b.data_dir).stdout)
    assert [(t["name"], t["user"]) for t in listed] == [("short", "bob")]
    stored = (b.data_dir / ".strom" / "tokens.json").read_text()
    assert short not in stored and short[len("strom_"):] not in stored
    # Secrets never reach the log; the failures are logged without them.
    log = b.log
    for secret in (PASSWORD, token, short, token[len("strom_"):]):
        assert secret not in log
    assert "HTTP authentication failed" in log


def test_groups_queues_and_websocket_are_authorized(secured):
    b, curl = secured, secured.curl
    assert curl("POST", "/topics", *basic("admin"), body={"name": "events", "partitions": 1})[0] == 201
    curl("POST", "/topics/events/records", *basic("admin"), body={"records": [{"value": "e1"}]})
    acl_add(b.data_dir, "--allow-principal", "User:alice", "--operation", "Read", "--topic", "events")
    time.sleep(1.5)
    # A group join needs READ on the group too.
    join = {"topics": ["events"], "from": "earliest"}
    status, _, body = curl("POST", "/groups/g1/members", *basic("alice"), body=join)
    assert status == 403 and "GROUP" in body["error"]["message"], body
    status, _, body = curl("POST", "/queues/q1/receive", *basic("alice"), body={"topics": ["events"]})
    assert status == 403, body
    acl_add(b.data_dir, "--allow-principal", "User:alice", "--operation", "Read", "--group", "g1",
            "--group", "q1")
    time.sleep(1.5)
    status, _, body = curl("POST", "/groups/g1/members", *basic("alice"), body=join)
    assert status == 201, body
    member = body["member_id"]
    status, _, body = curl("GET", f"/groups/g1/members/{member}/records?timeout_ms=2000", *basic("alice"))
    assert status == 200 and [r["value"] for r in body["records"]] == ["e1"], body
    # bob may not touch alice's group, even knowing the member id.
    assert curl("GET", f"/groups/g1/members/{member}/records", *basic("bob"))[0] == 403
    assert curl("DELETE", f"/groups/g1/members/{member}", *basic("alice"))[0] == 204
    # Queue configs need DESCRIBE_CONFIGS / ALTER_CONFIGS on the group.
    earliest = {"configs": {"share.auto.offset.reset": "earliest"}}
    assert curl("POST", "/queues/q1/config", *basic("alice"), body=earliest)[0] == 403
    assert curl("GET", "/queues/q1/config", *basic("alice"))[0] == 403
    status, _, body = curl("POST", "/queues/q1/config", *basic("admin"), body=earliest)
    assert status == 200, body
    status, _, body = curl("POST", "/queues/q1/receive", *basic("alice"),
                           body={"topics": ["events"], "wait_ms": 2000})
    assert status == 200 and [r["value"] for r in body["records"]] == ["e1"], body
    assert curl("GET", "/queues/q1", *basic("alice"))[0] == 200  # READ implies DESCRIBE
    assert curl("GET", "/queues/q1", *basic("bob"))[0] == 403

    # WebSocket over TLS with a token header: the named topic alice may read is served, one
    # she may not is refused, a glob only matches what she may read.
    import ssl
    ctx = ssl.create_default_context(cafile=str(curl.ca))
    ws_url = curl.base.replace("https://", "wss://") + "/ws"
    token = make_token(b.data_dir, "alice-ws", "alice")
    with pytest.raises(Exception) as e:
        ws_connect(ws_url, ssl=ctx, open_timeout=10)
    assert "401" in str(e.value)
    with ws_connect(ws_url, ssl=ctx, open_timeout=10,
                    additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"op": "subscribe", "topics": ["no-such-topic"], "from": "earliest"}))
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "subscribed" and msg["topics"] == [], msg
        curl("POST", "/topics", *basic("admin"), body={"name": "private", "partitions": 1})
        ws.send(json.dumps({"op": "subscribe", "topics": ["private"], "from": "earliest"}))
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error" and msg["code"] == "forbidden", msg
        ws.send(json.dumps({"op": "subscribe", "topics": ["*"], "from": "earliest"}))
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "subscribed" and msg["topics"] == ["events"], msg
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "record" and msg["value"] == "e1", msg
        # Producing over the socket is a WRITE: refused, nothing written.
        ws.send(json.dumps({"op": "produce", "topic": "events", "records": [{"value": "x"}]}))
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error" and "forbidden" in msg["message"], msg
    status, _, body = curl("GET", "/topics/events/partitions/0/records?offset=0", *basic("admin"))
    assert [r["value"] for r in body["records"]] == ["e1"]


PAGE = """<!doctype html><html><body><script>
const report = (what) => fetch('/report', {method: 'POST', body: JSON.stringify(what)});
// Without a token the upgrade is refused (401): the socket closes without opening.
const anon = new WebSocket('ws://127.0.0.1:%(http)d/ws');
anon.onopen = () => report({anonymous: 'opened'});
anon.onclose = () => report({anonymous: 'refused'});
const ws = new WebSocket('ws://127.0.0.1:%(http)d/ws?token=%(token)s');
ws.onopen = () => ws.send(JSON.stringify({op: 'subscribe', topics: ['chat'], from: 'earliest'}));
ws.onmessage = (m) => { const v = JSON.parse(m.data); if (v.type === 'record') report({record: v.value}); };
ws.onerror = () => report({error: 'token socket failed'});
</script></body></html>"""


def test_a_browser_page_subscribes_with_a_token(broker_factory, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    b = broker_factory("--http-auth", "required", start=False, http=True)
    token = make_token(b.data_dir, "browser", "alice")
    b.start()
    produce(b.bootstrap, "chat", [b"hello from kafka"])
    reports, got = [], threading.Event()
    page = (PAGE % {"http": b.http_port, "token": token}).encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self):
            reports.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            if any("record" in r for r in reports) and any("anonymous" in r for r in reports):
                got.set()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:6]}"
    browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                "--no-first-run", f"--user-data-dir={profile}",
                                f"http://127.0.0.1:{server.server_address[1]}/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert got.wait(60), f"the page reported {reports}"
    finally:
        browser.kill()
        browser.wait(10)
        server.shutdown()
    assert {"record": "hello from kafka"} in reports
    assert {"anonymous": "refused"} in reports and {"anonymous": "opened"} not in reports
    assert token not in b.log
