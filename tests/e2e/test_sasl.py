"""SASL (issue 16, item 3): SASL_PLAINTEXT and SASL_SSL listeners, SaslHandshake v0-1 and
SaslAuthenticate v0-2 with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 against salted credentials
in the data dir, `strom user set|delete|list` offline (`--data-dir`) and online
(`--bootstrap`, AlterUserScramCredentials / DescribeUserScramCredentials), re-authentication
(KIP-368, `--connections-max-reauth-ms`). Real clients: confluent-kafka (librdkafka), kcat,
kafka-python. Bad input (a wrong password, an unknown user or mechanism, a request before the
handshake, SaslAuthenticate without a handshake, a large frame before authentication) closes
that one connection with the Kafka error where there is one; the broker serves everyone else
and never logs a password."""

import json
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

import kwire
from confluent_helpers import consume_all, kcat_round_trip, produce
from conftest import free_port, strom_bin

pytestmark = [pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
needs_kcat = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")

PASSWORD = "pa55-W0rd-xyzzy"
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
ILLEGAL_SASL_STATE, UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 34, 33, 58


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([str(REPO / "scripts" / "test-certs"), str(d)], check=True, timeout=60)
    return d


def ports(n):
    out = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


def user_cmd(*args, password=None, timeout=60):
    return subprocess.run([strom_bin(), "user", *map(str, args)], capture_output=True, timeout=timeout,
                          input=(password + "\n").encode() if password is not None else None)


def set_user(data_dir, name, mechanism, password=PASSWORD):
    p = user_cmd("set", name, "--mechanism", mechanism, "--password-stdin", "--data-dir", data_dir,
                 password=password)
    assert p.returncode == 0, p.stderr


def sasl_broker(broker_factory, certs, *extra, users=(("alice", "SCRAM-SHA-512"),), **opts):
    """PLAINTEXT on P1 (the readiness probe), SASL_SSL on P2, SASL_PLAINTEXT on P3; the users
    are created offline before the first start."""
    p1, p2, p3 = ports(3)
    b = broker_factory(*extra, start=False,
                       listeners=f"PLAINTEXT://127.0.0.1:{p1},SASL_SSL://127.0.0.1:{p2},"
                                 f"SASL_PLAINTEXT://127.0.0.1:{p3}",
                       tls_cert=certs / "server.pem", tls_key=certs / "server.key", **opts)
    for name, mech in users:
        set_user(b.data_dir, name, mech)
    b.start()
    return b, f"127.0.0.1:{p2}", f"127.0.0.1:{p3}"


def sasl_conf(certs, mechanism, user="alice", password=PASSWORD, ssl=True):
    c = {"security.protocol": "SASL_SSL" if ssl else "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
         "sasl.username": user, "sasl.password": password}
    if ssl:
        c["ssl.ca.location"] = str(certs / "ca.pem")
    return c


def wait_log(b, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in b.log and time.monotonic() < deadline:
        time.sleep(0.1)
    return text in b.log


def auth_fails(bootstrap, **conf):
    """A librdkafka producer with these settings cannot deliver: the error callback reports
    an authentication failure."""
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 4000,
                  "error_cb": lambda e: errors.append(e), **conf})
    p.produce("never", b"x")
    p.flush(8)
    return any("auth" in str(e).lower() for e in errors), errors


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_confluent_over_sasl_ssl_with_every_mechanism(broker_factory, certs, mechanism):
    users = [("alice", "SCRAM-SHA-512"), ("alice", "SCRAM-SHA-256")]
    b, ssl_addr, _ = sasl_broker(broker_factory, certs, users=users)
    values = [f"{mechanism}-{i}".encode() * 20 for i in range(200)]
    produce(ssl_addr, "sasl-t", values, **sasl_conf(certs, mechanism))
    assert consume_all(ssl_addr, "sasl-t", len(values), commit=True, **sasl_conf(certs, mechanism)) == values
    assert wait_log(b, f"mechanism=\"{mechanism}\"") or wait_log(b, f"mechanism={mechanism}")
    assert wait_log(b, "principal=User:alice")
    # Metadata on the SASL_SSL listener advertises that listener only.
    md = Producer({"bootstrap.servers": ssl_addr, **sasl_conf(certs, mechanism)}).list_topics(timeout=20)
    assert [f"{x.host}:{x.port}" for x in md.brokers.values()] == [ssl_addr]
    # Neither the credential file nor the log holds the password.
    store = (b.data_dir / ".strom" / "scram-credentials.json").read_text()
    assert "alice" in store and PASSWORD not in store
    assert PASSWORD not in b.log


def test_wrong_password_unknown_user_and_mechanism_are_refused_and_others_go_on(broker_factory, certs):
    b, ssl_addr, plain_addr = sasl_broker(broker_factory, certs)
    failed, errors = auth_fails(ssl_addr, **sasl_conf(certs, "SCRAM-SHA-512", password="wrong-one"))
    assert failed, errors
    failed, errors = auth_fails(plain_addr, **sasl_conf(certs, "PLAIN", password="wrong-two", ssl=False))
    assert failed, errors
    failed, errors = auth_fails(plain_addr, **sasl_conf(certs, "SCRAM-SHA-512", user="mallory", ssl=False))
    assert failed, errors
    # SCRAM-SHA-256: alice has no such credential.
    failed, errors = auth_fails(ssl_addr, **sasl_conf(certs, "SCRAM-SHA-256"))
    assert failed, errors
    assert wait_log(b, "kafka SASL authentication failed")
    for secret in ("wrong-one", "wrong-two", PASSWORD):
        assert secret not in b.log
    # The broker serves the right password meanwhile, on both SASL listeners.
    produce(ssl_addr, "ok", [b"1"], **sasl_conf(certs, "SCRAM-SHA-512"))
    produce(plain_addr, "ok", [b"2"], **sasl_conf(certs, "SCRAM-SHA-512", ssl=False))
    assert consume_all(b.bootstrap, "ok", 2) == [b"1", b"2"]


def test_protocol_violations_close_the_connection(broker_factory, certs):
    b, _, plain_addr = sasl_broker(broker_factory, certs)
    # A request other than ApiVersions / SASL before authentication: closed, unanswered.
    with kwire.Conn(plain_addr) as c:
        c.send_request(kwire.METADATA, 1, struct.pack(">i", -1))
        assert c.is_closed()
    # ApiVersions is answered before authentication and lists the SASL APIs.
    with kwire.Conn(plain_addr) as c:
        err, apis = c.api_versions()
        assert err == 0 and apis[SASL_HANDSHAKE] == (0, 1) and apis[SASL_AUTHENTICATE] == (0, 2)
        # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled list, then closed.
        r = c.call(SASL_HANDSHAKE, 1, kwire.kstring("GSSAPI"))
        assert r.i16() == UNSUPPORTED_SASL_MECHANISM
        assert r.array(lambda r: r.string()) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        assert c.is_closed()
    # SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE, then closed.
    with kwire.Conn(plain_addr) as c:
        r = c.call(SASL_AUTHENTICATE, 1, kwire.kbytes(b"\0alice\0" + PASSWORD.encode()))
        assert r.i16() == ILLEGAL_SASL_STATE
        assert c.is_closed()
    # A large frame before authentication: closed without reading it.
    with kwire.Conn(plain_addr) as c:
        c.send_raw(struct.pack(">i", 1 << 20) + b"\0" * 1024)
        assert c.is_closed()
    # A wrong PLAIN password over the wire: SASL_AUTHENTICATION_FAILED after the failure delay.
    with kwire.Conn(plain_addr) as c:
        assert c.call(SASL_HANDSHAKE, 1, kwire.kstring("PLAIN")).i16() == 0
        started = time.monotonic()
        r = c.call(SASL_AUTHENTICATE, 1, kwire.kbytes(b"\0alice\0nope"))
        assert r.i16() == SASL_AUTHENTICATION_FAILED
        assert "invalid credentials" in r.string()
        assert time.monotonic() - started >= 0.09
        assert c.is_closed()
    # The right one, in v0's raw tokens: the connection then serves Metadata as alice.
    with kwire.Conn(plain_addr) as c:
        assert c.call(SASL_HANDSHAKE, 0, kwire.kstring("PLAIN")).i16() == 0
        token = b"\0alice\0" + PASSWORD.encode()
        c.send_raw(struct.pack(">i", len(token)) + token)
        assert struct.unpack(">i", c.recv_exact(4))[0] == 0
        r = c.call(kwire.METADATA, 1, struct.pack(">i", -1))
        assert r.i32() == 1  # one broker
    # SaslHandshake on a PLAINTEXT listener: ILLEGAL_SASL_STATE; the connection stays usable.
    with kwire.Conn(b.bootstrap) as c:
        assert c.call(SASL_HANDSHAKE, 1, kwire.kstring("PLAIN")).i16() == ILLEGAL_SASL_STATE
        assert c.api_versions()[0] == 0
    assert b.running()


def test_kafka_python_over_sasl_plaintext(broker_factory, certs):
    b, _, plain_addr = sasl_broker(broker_factory, certs,
                                   users=[("bob", "SCRAM-SHA-256"), ("bob", "SCRAM-SHA-512")])
    for mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        conf = dict(bootstrap_servers=plain_addr, security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism=mech, sasl_plain_username="bob", sasl_plain_password=PASSWORD)
        p = KafkaProducer(acks="all", **conf)
        for i in range(20):
            p.send("kp-sasl", f"{mech}-{i}".encode())
        p.flush(20)
        p.close()
    c = KafkaConsumer("kp-sasl", auto_offset_reset="earliest", consumer_timeout_ms=8000,
                      bootstrap_servers=plain_addr, security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob",
                      sasl_plain_password=PASSWORD)
    got = [m.value for m in c]
    c.close()
    assert len(got) == 60 and got[0] == b"PLAIN-0" and got[-1] == b"SCRAM-SHA-512-19"
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=plain_addr, security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="bob",
                      sasl_plain_password="bad",
                      max_block_ms=5000).send("kp-sasl", b"x").get(timeout=8)
    assert b.running()


@needs_kcat
def test_kcat_over_sasl_ssl_scram(broker_factory, certs):
    _, ssl_addr, _ = sasl_broker(broker_factory, certs)
    conf = ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={certs / 'ca.pem'}",
            "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=alice",
            "-X", f"sasl.password={PASSWORD}"]
    kcat_round_trip(ssl_addr, "kc-sasl", conf)


def test_user_cli_offline_and_online(broker_factory, certs):
    b, ssl_addr, plain_addr = sasl_broker(broker_factory, certs)
    # Offline on the running broker's data dir: seen without a restart.
    set_user(b.data_dir, "carol", "SCRAM-SHA-256", password="carol-pw-1")
    produce(plain_addr, "cli", [b"c"], **sasl_conf(certs, "SCRAM-SHA-256", "carol", "carol-pw-1", ssl=False))
    # Online through the PLAINTEXT listener: AlterUserScramCredentials.
    p = user_cmd("set", "dave", "--mechanism", "SCRAM-SHA-512", "--password-stdin",
                 "--iterations", 8192, "--bootstrap", b.bootstrap, password="dave-pw-1")
    assert p.returncode == 0, p.stderr
    produce(ssl_addr, "cli", [b"d"], **sasl_conf(certs, "SCRAM-SHA-512", "dave", "dave-pw-1"))
    p = user_cmd("list", "--json", "--bootstrap", b.bootstrap)
    assert p.returncode == 0, p.stderr
    listed = {u["user"]: u["credentials"] for u in json.loads(p.stdout)}
    assert listed["dave"] == [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]
    assert set(listed) == {"alice", "carol", "dave"}
    p = user_cmd("list", "--data-dir", b.data_dir)
    assert p.returncode == 0 and "carol" in p.stdout.decode() and "SCRAM-SHA-256" in p.stdout.decode()
    # Bad input: iterations out of range, an unknown mechanism, deleting what is not there.
    p = user_cmd("set", "erin", "--password-stdin", "--iterations", 10, "--bootstrap", b.bootstrap,
                 password="x")
    assert p.returncode != 0 and b"iterations" in p.stderr
    p = user_cmd("set", "erin", "--mechanism", "MD5", "--password-stdin", "--data-dir", b.data_dir,
                 password="x")
    assert p.returncode != 0 and b"unknown mechanism" in p.stderr
    p = user_cmd("delete", "nobody", "--mechanism", "SCRAM-SHA-256", "--bootstrap", b.bootstrap)
    assert p.returncode != 0
    # Deleted online: dave's next login fails; alice's goes on.
    p = user_cmd("delete", "dave", "--bootstrap", b.bootstrap)
    assert p.returncode == 0, p.stderr
    failed, errors = auth_fails(ssl_addr, **sasl_conf(certs, "SCRAM-SHA-512", "dave", "dave-pw-1"))
    assert failed, errors
    produce(ssl_addr, "cli", [b"a"], **sasl_conf(certs, "SCRAM-SHA-512"))
    for secret in ("carol-pw-1", "dave-pw-1", PASSWORD):
        assert secret not in b.log
    assert consume_all(b.bootstrap, "cli", 3) == [b"c", b"d", b"a"]


def test_reauthentication_within_the_session_lifetime(broker_factory, certs):
    b, ssl_addr, _ = sasl_broker(broker_factory, certs, connections_max_reauth_ms=2000)
    conf = sasl_conf(certs, "SCRAM-SHA-512")
    errors = []
    p = Producer({"bootstrap.servers": ssl_addr, "acks": "all", **conf})
    sent = 0
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        p.produce("reauth", f"r-{sent}".encode(), on_delivery=lambda e, m: e and errors.append(e))
        sent += 1
        p.poll(0.05)
    assert p.flush(30) == 0 and errors == []
    # librdkafka re-authenticated on its open connections (KIP-368) instead of being closed.
    assert wait_log(b, "reauth=true")
    assert consume_all(b.bootstrap, "reauth", sent) == [f"r-{i}".encode() for i in range(sent)]
    assert b.running()


def test_session_expiry_closes_a_client_that_does_not_reauthenticate(broker_factory, certs):
    b, _, plain_addr = sasl_broker(broker_factory, certs, connections_max_reauth_ms=1000)
    with kwire.Conn(plain_addr) as c:
        assert c.call(SASL_HANDSHAKE, 1, kwire.kstring("PLAIN")).i16() == 0
        r = c.call(SASL_AUTHENTICATE, 1, kwire.kbytes(b"\0alice\0" + PASSWORD.encode()))
        assert r.i16() == 0
        assert c.call(kwire.METADATA, 1, struct.pack(">i", -1)).i32() == 1
        time.sleep(1.3)
        c.send_request(kwire.METADATA, 1, struct.pack(">i", -1))
        assert c.is_closed()
    assert wait_log(b, "SASL session expired")


JS = Path(__file__).resolve().parent / "js"


@pytest.mark.skipif(shutil.which("node") is None or not (JS / "node_modules" / "kafkajs").is_dir(),
                    reason="node or kafkajs missing (scripts/setup installs kafkajs)")
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_kafkajs_over_sasl_ssl(broker_factory, certs, mechanism):
    stored = "SCRAM-SHA-256" if mechanism == "SCRAM-SHA-256" else "SCRAM-SHA-512"
    b, sasl_ssl, _ = sasl_broker(broker_factory, certs, users=(("alice", stored),))
    topic = f"kjs-{mechanism.lower()}"
    p = subprocess.run(["node", str(JS / "kafkajs_sasl.js"), sasl_ssl, str(certs / "ca.pem"),
                        mechanism.lower(), "alice", PASSWORD, topic],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["produced"] == [0]
    assert sorted(out["consumed"]) == sorted(f"m{i}" for i in range(50))
    assert "SASL" in out["wrong_password"] or "Authentication" in out["wrong_password"], out
    assert PASSWORD not in b.log
