"""TLS (issue 16, item 2): SSL listeners of the Kafka door with rustls, `--tls-cert/--tls-key`,
mutual TLS with `--tls-client-ca` (principal `User:<CN>`), reload on SIGHUP without dropping
connections, HTTPS on the HTTP door with `--http-tls true`. Real clients: confluent-kafka
(librdkafka + OpenSSL), kafka-python (Python's ssl), kcat, requests. Bad input on a TLS port
(plaintext Kafka, garbage, a silent client, a client without a certificate) closes that one
connection; the broker goes on serving. Certificates come from scripts/test-certs."""

import json
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer

from confluent_helpers import consume_all, kcat_round_trip, produce
from conftest import free_port, strom_bin

pytestmark = [pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
needs_kcat = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def make_certs(d: Path, *clients: str) -> Path:
    subprocess.run([str(REPO / "scripts" / "test-certs"), str(d), *clients], check=True, timeout=60)
    return d


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path / "certs", "alice")


def tls_broker(broker_factory, certs, *extra, **opts):
    """PLAINTEXT on P1 (the fixture's readiness probe), SSL on P2."""
    p1, p2 = free_port(), free_port()
    while p2 == p1:
        p2 = free_port()
    b = broker_factory(*extra, listeners=f"PLAINTEXT://127.0.0.1:{p1},SSL://127.0.0.1:{p2}",
                       tls_cert=certs / "server.pem", tls_key=certs / "server.key", **opts)
    return b, f"127.0.0.1:{p2}"


def ssl_conf(certs, client=None, ca=None):
    c = {"security.protocol": "SSL", "ssl.ca.location": str(ca or certs / "ca.pem")}
    if client:
        c["ssl.certificate.location"] = str(certs / f"client-{client}.pem")
        c["ssl.key.location"] = str(certs / f"client-{client}.key")
    return c


def api_versions_frame() -> bytes:
    client = b"tls-test"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    return struct.pack(">i", len(body)) + body


def closed_without_answer(sock, timeout=15) -> bool:
    """Whether the broker closes `sock` (EOF or reset, after at most a TLS alert record)
    instead of answering."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return got == b"" or (got[0] == 0x15 and len(got) <= 64)  # 0x15: TLS alert


def assert_serving(b):
    """The broker still answers Kafka on its plaintext listener."""
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(api_versions_frame())
        s.settimeout(10)
        (n,) = struct.unpack(">i", s.recv(4))
        assert n > 0
    assert b.running()


def tls_handshake(addr, ca, client_cert=None):
    """A handshake with Python's ssl trusting `ca`, then an ApiVersions request; returns the
    response's length prefix."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if client_cert:
        ctx.load_cert_chain(*client_cert)
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(api_versions_frame())
            s.settimeout(10)
            head = s.recv(4)
            if len(head) < 4:
                raise ConnectionError("closed without an answer")
            return struct.unpack(">i", head)[0]


def test_confluent_produces_and_consumes_over_ssl(broker_factory, certs):
    b, ssl_addr = tls_broker(broker_factory, certs)
    values = [f"tls-{i}".encode() * 50 for i in range(300)]
    produce(ssl_addr, "tls-t", values, **ssl_conf(certs))
    # Fetched over TLS (file ranges read and encrypted) and over plaintext (sendfile): the same log.
    assert consume_all(ssl_addr, "tls-t", len(values), **ssl_conf(certs)) == values
    assert consume_all(b.bootstrap, "tls-t", len(values)) == values
    # Metadata over the SSL listener advertises the SSL address: the client never leaves TLS.
    md = Producer({"bootstrap.servers": ssl_addr, **ssl_conf(certs)}).list_topics(timeout=10)
    assert [f"{x.host}:{x.port}" for x in md.brokers.values()] == [ssl_addr]


def test_kafka_python_over_ssl(broker_factory, certs):
    _, ssl_addr = tls_broker(broker_factory, certs)
    p = KafkaProducer(bootstrap_servers=ssl_addr, security_protocol="SSL",
                      ssl_cafile=str(certs / "ca.pem"), acks="all")
    for i in range(50):
        p.send("kp-tls", f"kp-{i}".encode())
    p.flush(30)
    p.close()
    c = KafkaConsumer("kp-tls", bootstrap_servers=ssl_addr, security_protocol="SSL",
                      ssl_cafile=str(certs / "ca.pem"), auto_offset_reset="earliest",
                      consumer_timeout_ms=10000)
    got = [m.value for m in c]
    c.close()
    assert got == [f"kp-{i}".encode() for i in range(50)]


@needs_kcat
def test_kcat_over_ssl(broker_factory, certs):
    _, ssl_addr = tls_broker(broker_factory, certs)
    tls = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs / 'ca.pem'}"]
    kcat_round_trip(ssl_addr, "kc-tls", tls)
    p = subprocess.run(["kcat", "-L", "-J", "-b", ssl_addr, *tls], capture_output=True, timeout=60)
    assert [x["name"] for x in json.loads(p.stdout)["brokers"]] == [ssl_addr]


def test_mutual_tls_principal_from_the_client_certificate(broker_factory, certs):
    b, ssl_addr = tls_broker(broker_factory, certs, tls_client_ca=certs / "ca.pem")
    produce(ssl_addr, "mtls", [b"x", b"y"], **ssl_conf(certs, client="alice"))
    deadline = time.monotonic() + 10
    while "principal=User:alice" not in b.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "principal=User:alice" in b.log
    assert consume_all(ssl_addr, "mtls", 2, **ssl_conf(certs, client="alice")) == [b"x", b"y"]
    # Without a certificate: the handshake (or the first read after it) fails.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_handshake(ssl_addr, certs / "ca.pem")
    # With alice's certificate, the same request is answered.
    assert tls_handshake(ssl_addr, certs / "ca.pem",
                         (certs / "client-alice.pem", certs / "client-alice.key")) > 0
    # A certificate of another CA is refused too.
    other = make_certs(certs.parent / "other", "mallory")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_handshake(ssl_addr, certs / "ca.pem",
                      (other / "client-mallory.pem", other / "client-mallory.key"))
    assert_serving(b)


def test_bad_input_on_a_tls_port_closes_that_connection_only(broker_factory, certs):
    b, ssl_addr = tls_broker(broker_factory, certs, read_timeout_ms=1000)
    host, port = ssl_addr.split(":")
    # A plaintext Kafka request on the TLS port: not a ClientHello.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(api_versions_frame())
        assert closed_without_answer(s)
    # Garbage, and a ClientHello record header announcing more than it sends then stopping.
    for junk in [b"\x00" * 64, b"\x16\x03\x01\xff\xff\x01\x00"]:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(junk)
            assert closed_without_answer(s)
    # A client that connects and says nothing is closed after the read timeout.
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        assert closed_without_answer(s, timeout=10)
    assert time.monotonic() - started < 8
    # A client that does not trust the server's CA gives up; the broker is unaffected.
    other = make_certs(certs.parent / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(ssl_addr, other / "ca.pem")
    assert_serving(b)
    produce(ssl_addr, "after-junk", [b"ok"], **ssl_conf(certs))
    assert "panicked" not in b.log


def test_sighup_reloads_the_certificate_without_dropping_connections(broker_factory, tmp_path):
    old = make_certs(tmp_path / "old")
    new = make_certs(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    for f in ["server.pem", "server.key"]:
        shutil.copy(old / f, live / f)
    b, ssl_addr = tls_broker(broker_factory, live)
    p = produce(ssl_addr, "reload", [b"before"], **ssl_conf(old))
    # New files, then SIGHUP.
    for f in ["server.pem", "server.key"]:
        shutil.copy(new / f, live / f)
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate reloaded" not in b.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "TLS certificate reloaded" in b.log
    # The producer connected before the reload keeps its connection and produces on.
    p.produce("reload", b"after")
    assert p.flush(20) == 0
    # New connections get the new certificate: the new CA verifies it, the old one does not.
    assert tls_handshake(ssl_addr, new / "ca.pem") > 0
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(ssl_addr, old / "ca.pem")
    assert consume_all(ssl_addr, "reload", 2, **ssl_conf(new)) == [b"before", b"after"]
    # A reload of broken files is refused and the certificate in use stays.
    (live / "server.key").write_text("not a key")
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate not reloaded" not in b.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "TLS certificate not reloaded" in b.log
    assert tls_handshake(ssl_addr, new / "ca.pem") > 0
    assert b.running()


def test_https_on_the_http_door(broker_factory, certs):
    port = free_port()
    b = broker_factory(http_addr=f"127.0.0.1:{port}", http_tls=True,
                       tls_cert=certs / "server.pem", tls_key=certs / "server.key",
                       tls_client_ca=certs / "ca.pem")
    base = f"https://127.0.0.1:{port}"
    ca = str(certs / "ca.pem")
    deadline = time.monotonic() + 20
    while True:
        try:
            r = requests.get(f"{base}/healthz", verify=ca, timeout=5)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert r.status_code == 200
    # No client certificate is asked for on HTTPS, even with --tls-client-ca (Kafka's SSL
    # listeners only).
    r = requests.post(f"{base}/topics", json={"name": "https-t", "partitions": 1}, verify=ca, timeout=10)
    assert r.status_code in (200, 201), r.text
    r = requests.post(f"{base}/topics/https-t/records", json={"records": [{"value": "hello"}]},
                      verify=ca, timeout=10)
    assert r.status_code == 200, r.text
    got = requests.get(f"{base}/topics/https-t/partitions/0/records", params={"offset": 0},
                       verify=ca, timeout=10).json()
    assert [x["value"] for x in got["records"]] == ["hello"]
    # Plain HTTP on the HTTPS port is closed; the door goes on.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{base}/healthz", timeout=5)  # the system CAs do not know the test CA
    assert requests.get(f"{base}/healthz", verify=ca, timeout=5).status_code == 200
    assert_serving(b)


def run_serve(*args, timeout=30):
    d = tempfile.mkdtemp(prefix="strom-e2e-")
    try:
        return subprocess.run([strom_bin(), "serve", "--data-dir", d, "--http-addr", "off",
                               "--kafka-addr", f"127.0.0.1:{free_port()}", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_tls_settings_are_refused_at_start(certs):
    cases = [
        (["--tls-cert", certs / "server.pem"], "--tls-cert needs --tls-key"),
        (["--tls-key", certs / "server.key"], "--tls-key needs --tls-cert"),
        (["--http-tls", "true"], "--http-tls true needs --tls-cert and --tls-key"),
        (["--grpc-tls", "true"], "--grpc-tls true needs --tls-cert and --tls-key"),
        (["--tls-client-ca", certs / "ca.pem"], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", certs / "missing.pem", "--tls-key", certs / "server.key"], "missing.pem"),
        (["--tls-cert", certs / "server.pem", "--tls-key", certs / "client-alice.key"],
         "client-alice.key"),
    ]
    for args, message in cases:
        p = run_serve(*map(str, args))
        assert p.returncode == 1, (args, p)
        assert message in p.stderr, (args, p.stderr)
        assert "panicked" not in p.stderr


def test_grpc_over_tls_and_sighup(broker_factory, certs):
    """--grpc-tls true: grpcio over TLS with the test CA (HTTP/2 by ALPN); a plaintext gRPC
    client is refused; SIGHUP reloads the certificate and open channels keep working."""
    import grpc
    from grpc_helpers import generated
    pb2, pb2_grpc = generated()
    b = broker_factory(grpc=True, grpc_tls=True, tls_cert=certs / "server.pem", tls_key=certs / "server.key")
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
    ch = grpc.secure_channel(b.grpc, creds)
    s = pb2_grpc.StromStub(ch)
    s.CreateTopic(pb2.CreateTopicRequest(name="grpc-tls", partitions=1), timeout=10)
    ack = s.Produce(pb2.ProduceRequest(topic="grpc-tls", records=[pb2.Record(value=b"secret")]), timeout=10)
    assert ack.records[0].offset == 0
    plain = grpc.insecure_channel(b.grpc)
    with pytest.raises(grpc.RpcError) as e:
        pb2_grpc.StromStub(plain).ListTopics(pb2.ListTopicsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    plain.close()
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate reloaded" not in b.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b.log.count("TLS certificate reloaded") >= 1
    # The open channel and a new one both work after the reload.
    s.Produce(pb2.ProduceRequest(topic="grpc-tls", records=[pb2.Record(value=b"after")]), timeout=10)
    ch2 = grpc.secure_channel(b.grpc, creds)
    stream = pb2_grpc.StromStub(ch2).Subscribe(pb2.SubscribeRequest(topics=["grpc-tls"], **{"from": "earliest"}))
    got = []
    for r in stream:
        got.append(r.value)
        if len(got) == 2:
            stream.cancel()
            break
    assert got == [b"secret", b"after"]
    ch.close()
    ch2.close()
