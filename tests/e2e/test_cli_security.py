"""The `strom` CLI over secured listeners (issue 16): `--security-protocol` SSL, SASL_SSL and
SASL_PLAINTEXT with `--tls-ca`, `--tls-client-cert/--tls-client-key` (mutual TLS) and
`--sasl-mechanism` PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512, `--sasl-username` with the password
in STROM_SASL_PASSWORD, for the client commands (topic, produce, consume) and `strom user`
online. What the CLI writes over SASL_SSL, confluent-kafka reads over SASL_SSL, and the other
way round. A wrong password, a CA that did not sign the broker's certificate and missing
settings are refused with a clear message and exit 1; the password never shows."""

import os
import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from conftest import strom_bin
from test_sasl import PASSWORD, ports, set_user
from test_tls import make_certs, tls_broker

pytestmark = [pytest.mark.timeout(150)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"), "alice")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("other-certs"))


@pytest.fixture
def secured(broker_factory, certs):
    """PLAINTEXT (readiness probe), SASL_SSL, SASL_PLAINTEXT and SSL; the users alice
    (SCRAM-SHA-512 and SCRAM-SHA-256) exist before the first start."""
    p1, p2, p3, p4 = ports(4)
    b = broker_factory(start=False,
                       listeners=f"PLAINTEXT://127.0.0.1:{p1},SASL_SSL://127.0.0.1:{p2},"
                                 f"SASL_PLAINTEXT://127.0.0.1:{p3},SSL://127.0.0.1:{p4}",
                       tls_cert=certs / "server.pem", tls_key=certs / "server.key")
    for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        set_user(b.data_dir, "alice", mech)
    b.start()
    return b, {"sasl_ssl": f"127.0.0.1:{p2}", "sasl_plaintext": f"127.0.0.1:{p3}", "ssl": f"127.0.0.1:{p4}"}


def strom(*args, password=PASSWORD, stdin=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROM_")}
    if password is not None:
        env["STROM_SASL_PASSWORD"] = password
    return subprocess.run([strom_bin(), *map(str, args)], capture_output=True, timeout=timeout, env=env,
                          input=stdin)


def sasl_ssl_args(addr, certs, mechanism="SCRAM-SHA-512"):
    return ["--bootstrap", addr, "--security-protocol", "SASL_SSL", "--tls-ca", certs / "ca.pem",
            "--sasl-mechanism", mechanism, "--sasl-username", "alice"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_cli_round_trip_over_sasl_ssl_with_confluent_kafka(secured, certs, mechanism):
    b, addrs = secured
    topic = f"cs-{uuid.uuid4().hex[:8]}"
    args = sasl_ssl_args(addrs["sasl_ssl"], certs, mechanism)
    r = strom("topic", "create", topic, "--partitions", 2, *args)
    assert r.returncode == 0, r.stderr
    r = strom("produce", topic, *args, stdin=b"".join(b"cli-%d\n" % i for i in range(50)))
    assert r.returncode == 0, r.stderr
    conf = {"bootstrap.servers": addrs["sasl_ssl"], "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(certs / "ca.pem"), "sasl.mechanism": mechanism,
            "sasl.username": "alice", "sasl.password": PASSWORD}
    p = Producer({**conf, "acks": "all"})
    for i in range(50):
        p.produce(topic, b"ck-%d" % i)
    assert p.flush(30) == 0
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = set()
    for _ in range(60):
        for m in c.consume(100, 0.5):
            if m.error() is None:
                seen.add(m.value())
        if len(seen) == 100:
            break
    c.close()
    assert seen == {b"cli-%d" % i for i in range(50)} | {b"ck-%d" % i for i in range(50)}
    r = strom("consume", topic, "--from-beginning", "-n", 100, *args)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == seen
    assert PASSWORD.encode() not in r.stdout + r.stderr


def test_cli_over_sasl_plaintext_and_ssl(secured, certs):
    b, addrs = secured
    r = strom("topic", "create", "cs-plain", "--bootstrap", addrs["sasl_plaintext"],
              "--security-protocol", "SASL_PLAINTEXT", "--sasl-username", "alice")
    assert r.returncode == 0, r.stderr
    r = strom("topic", "list", "--bootstrap", addrs["ssl"], "--security-protocol", "SSL",
              "--tls-ca", certs / "ca.pem", password=None)
    assert r.returncode == 0, r.stderr
    assert b"cs-plain" in r.stdout


def test_cli_with_a_client_certificate(broker_factory, certs):
    b, ssl_addr = tls_broker(broker_factory, certs, tls_client_ca=certs / "ca.pem")
    mtls = ["--bootstrap", ssl_addr, "--security-protocol", "SSL", "--tls-ca", certs / "ca.pem",
            "--tls-client-cert", certs / "client-alice.pem", "--tls-client-key", certs / "client-alice.key"]
    r = strom("topic", "create", "cs-mtls", *mtls, password=None)
    assert r.returncode == 0, r.stderr
    assert "principal=User:alice" in b.log
    # The listener asks for a client certificate: without one, no session.
    r = strom("topic", "list", "--bootstrap", ssl_addr, "--security-protocol", "SSL",
              "--tls-ca", certs / "ca.pem", password=None)
    assert r.returncode == 1
    assert r.stderr.startswith(b"error: ")
    r = strom("topic", "list", *mtls[:-2], password=None)
    assert r.returncode == 1 and b"go together" in r.stderr, r.stderr


def test_user_cli_online_over_sasl_ssl(secured, certs):
    b, addrs = secured
    args = sasl_ssl_args(addrs["sasl_ssl"], certs)
    r = strom("user", "set", "bob", "--mechanism", "SCRAM-SHA-256", "--password-stdin", *args,
              stdin=b"b0b-secret\n")
    assert r.returncode == 0, r.stderr
    r = strom("user", "list", *args)
    assert r.returncode == 0, r.stderr
    assert b"bob" in r.stdout and b"alice" in r.stdout
    # bob's new credential works for the CLI at once.
    r = strom("topic", "list", "--bootstrap", addrs["sasl_ssl"], "--security-protocol", "SASL_SSL",
              "--tls-ca", certs / "ca.pem", "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "bob",
              password="b0b-secret")
    assert r.returncode == 0, r.stderr


def test_bad_settings_and_credentials_are_refused_clearly(secured, certs, other_ca):
    b, addrs = secured
    args = sasl_ssl_args(addrs["sasl_ssl"], certs)
    r = strom("topic", "list", *args, password="not-the-password")
    assert r.returncode == 1
    assert b"SASL authentication of \"alice\"" in r.stderr, r.stderr
    assert b"not-the-password" not in r.stderr + r.stdout
    # A CA that did not sign the broker's certificate: the handshake fails.
    r = strom("topic", "list", "--bootstrap", addrs["sasl_ssl"], "--security-protocol", "SASL_SSL",
              "--tls-ca", other_ca / "ca.pem", "--sasl-username", "alice")
    assert r.returncode == 1
    assert b"cannot connect to" in r.stderr, r.stderr
    for bad, why in ((["--security-protocol", "SASL_SSL", "--sasl-username", "alice"], b"--tls-ca"),
                     (["--security-protocol", "SASL_SSL", "--tls-ca", certs / "ca.pem"], b"--sasl-username"),
                     (["--security-protocol", "TLS"], b"PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
                     (["--security-protocol", "SASL_SSL", "--tls-ca", certs / "ca.pem", "--sasl-username",
                       "alice", "--sasl-mechanism", "GSSAPI"], b"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")):
        r = strom("topic", "list", "--bootstrap", addrs["sasl_ssl"], *bad)
        assert r.returncode == 1 and why in r.stderr, (bad, r.stderr)
    r = strom("topic", "list", *args, password=None)
    assert r.returncode == 1 and b"STROM_SASL_PASSWORD" in r.stderr, r.stderr
    # The broker served all that and still serves.
    r = strom("topic", "list", *args)
    assert r.returncode == 0, r.stderr
