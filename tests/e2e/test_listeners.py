"""Listeners in Kafka's syntax (issue 16, item 1): `--listeners NAME://HOST:PORT,...`, the
`--listener-security-protocol-map`, `--advertised-listeners`, and each listener answering
Metadata, FindCoordinator and DescribeCluster with its own advertised address. kcat shows each
listener's address; confluent-kafka produces through one listener and consumes in a group
through the other. A TLS listener (SSL, SASL_SSL) without a certificate is refused at start
(SASL itself: test_sasl.py); `--kafka-addr` still works as the short form."""

import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import free_port, strom_bin

pytestmark = [pytest.mark.timeout(120)]

needs_kcat = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def free_port_any() -> int:
    """A port free on every interface (conftest's free_port checks 127.0.0.1 only, and a
    0.0.0.0 listener conflicts with sockets of any local address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def two_listeners(broker_factory):
    """PLAINTEXT on 127.0.0.1:P1 advertised as itself, LOCAL on 0.0.0.0:P2 advertised as
    localhost:P2."""
    p1, p2 = free_port(), free_port_any()
    while p2 == p1:
        p2 = free_port_any()
    b = broker_factory(listeners=f"PLAINTEXT://127.0.0.1:{p1},LOCAL://0.0.0.0:{p2}",
                       listener_security_protocol_map="LOCAL:PLAINTEXT",
                       advertised_listeners=f"LOCAL://localhost:{p2}")
    return b, f"127.0.0.1:{p1}", f"localhost:{p2}", p2


def kcat_brokers(bootstrap):
    p = subprocess.run(["kcat", "-L", "-J", "-b", bootstrap, "-X", "socket.timeout.ms=10000"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return [b["name"] for b in json.loads(p.stdout)["brokers"]]


@needs_kcat
def test_kcat_sees_each_listeners_advertised_address(broker_factory):
    b, first, second, p2 = two_listeners(broker_factory)
    assert kcat_brokers(first) == [first]
    # Asked on the second listener (bootstrapped by IP), the broker is localhost:P2.
    assert kcat_brokers(f"127.0.0.1:{p2}") == [second]
    assert kcat_brokers(second) == [second]
    assert "listener=LOCAL addr=0.0.0.0:%d advertised=%s" % (p2, second) in b.log


def test_confluent_produces_and_consumes_through_two_listeners(broker_factory):
    b, first, second, _ = two_listeners(broker_factory)
    topic = f"listeners-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": second})
    admin.create_topics([NewTopic(topic, num_partitions=2)])[topic].result(30)

    # DescribeCluster and DescribeConfigs, each on the listener asked.
    for bootstrap in (first, second):
        a = AdminClient({"bootstrap.servers": bootstrap})
        nodes = a.describe_cluster(request_timeout=30).result(30).nodes
        assert [f"{n.host}:{n.port}" for n in nodes] == [bootstrap]
        res = ConfigResource(ConfigResource.Type.BROKER, "1")
        configs = a.describe_configs([res])[res].result(30)
        assert configs["advertised.listeners"].value == \
            f"PLAINTEXT://{first},LOCAL://{second}"
        assert configs["listener.security.protocol.map"].value == "PLAINTEXT:PLAINTEXT,LOCAL:PLAINTEXT"

    sent = {}
    for bootstrap in (second, first):
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(200):
            key, value = f"{bootstrap}-{i}".encode(), f"v{i}".encode()
            sent[key] = value
            p.produce(topic, key=key, value=value)
        assert p.flush(30) == 0

    # Consume in a group through each listener: FindCoordinator answers that listener's
    # address, which the consumer then joins and commits through.
    for bootstrap, group in ((first, "g-first"), (second, "g-second")):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            got[m.key()] = m.value()
        assert got == sent, f"{bootstrap}: {len(got)} of {len(sent)}"
        c.commit(asynchronous=False)
        c.close()
        a = AdminClient({"bootstrap.servers": bootstrap})
        desc = a.describe_consumer_groups([group])[group].result(30)
        assert f"{desc.coordinator.host}:{desc.coordinator.port}" == bootstrap


def run_serve(*args, timeout=30):
    d = tempfile.mkdtemp(prefix="strom-e2e-")
    try:
        return subprocess.run([strom_bin(), "serve", "--data-dir", d, "--http-addr", "off", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_sasl_ssl_listener_without_a_certificate_is_refused_at_start():
    p1, p2 = free_port(), free_port()
    p = run_serve("--listeners", f"PLAINTEXT://127.0.0.1:{p1},SASL_SSL://0.0.0.0:{p2}")
    assert p.returncode == 1, p
    assert "give its certificate with --tls-cert" in p.stderr
    assert "panicked" not in p.stderr


def test_an_unknown_sasl_mechanism_is_refused_at_start():
    p1, p2 = free_port(), free_port()
    p = run_serve("--listeners", f"PLAINTEXT://127.0.0.1:{p1},SASL_PLAINTEXT://127.0.0.1:{p2}",
                  "--sasl-mechanisms", "PLAIN,GSSAPI")
    assert p.returncode == 1, p
    assert 'unknown mechanism "GSSAPI"' in p.stderr
    assert "panicked" not in p.stderr


def test_an_ssl_listener_without_a_certificate_is_refused_at_start():
    p1, p2 = free_port(), free_port()
    p = run_serve("--listeners", f"PLAINTEXT://127.0.0.1:{p1},SSL://127.0.0.1:{p2}")
    assert p.returncode == 1, p
    assert "give its certificate with --tls-cert FILE --tls-key FILE" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


@pytest.mark.parametrize("args, message", [
    (["--listeners", "127.0.0.1:9092"], "is not NAME://HOST:PORT"),
    (["--listeners", ""], "--listeners is empty"),
    (["--listeners", "TLS://127.0.0.1:9092"], "TLS is neither a security protocol"),
    (["--listeners", "PLAINTEXT://127.0.0.1:99999"], "bad port"),
    (["--listeners", "PLAINTEXT://127.0.0.1:9092,A://127.0.0.1:9092",
      "--listener-security-protocol-map", "A:PLAINTEXT"], "both use port 9092"),
    (["--listeners", "PLAINTEXT://127.0.0.1:9092", "--kafka-addr", "127.0.0.1:9092"],
     "--listeners and --kafka-addr are both given"),
    (["--listeners", "PLAINTEXT://127.0.0.1:9092", "--advertised-listeners", "SSL://h:1"],
     "advertises SSL, which is not a listener"),
    (["--kafka-addr", "127.0.0.1:9092", "--advertised-listeners", "PLAINTEXT://0.0.0.0:1"],
     "unspecified address"),
])
def test_bad_listener_settings_are_refused(args, message):
    p = run_serve(*args)
    assert p.returncode == 1, p
    assert message in p.stderr, p.stderr
    assert "panicked" not in p.stderr


@needs_kcat
def test_kafka_addr_and_advertised_addr_still_work(broker_factory):
    b = broker_factory()  # the fixture's --kafka-addr 127.0.0.1:PORT
    assert kcat_brokers(b.bootstrap) == [b.bootstrap]
    port = free_port()
    b2 = broker_factory(advertised_addr=f"localhost:{port}")
    assert kcat_brokers(b2.bootstrap) == [f"localhost:{port}"]


@needs_kcat
def test_config_file_keys(tmp_path):
    p1, p2 = free_port(), free_port()
    cfg = tmp_path / "strom.toml"
    cfg.write_text(f'listeners = "PLAINTEXT://127.0.0.1:{p1},SIDE://127.0.0.1:{p2}"\n'
                   'listener_security_protocol_map = "SIDE:PLAINTEXT"\n'
                   f'advertised_listeners = "SIDE://localhost:{p2}"\n'
                   'http_addr = "off"\n')
    data = tmp_path / "data"
    proc = subprocess.Popen([strom_bin(), "serve", "--config", str(cfg), "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            try:
                socket.create_connection(("127.0.0.1", p2), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the SIDE listener never accepted"
                time.sleep(0.02)
        assert kcat_brokers(f"127.0.0.1:{p1}") == [f"127.0.0.1:{p1}"]
        assert kcat_brokers(f"127.0.0.1:{p2}") == [f"localhost:{p2}"]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
