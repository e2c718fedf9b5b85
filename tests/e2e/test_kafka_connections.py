"""The Kafka door under connection storms, slowloris and idle crowds (issue 22).

- `connections.max.idle.ms` closes a connection with nothing in flight, never one waiting for
  its long poll;
- a frame that is announced but does not arrive is closed after `--read-timeout-ms`;
- announced sizes reserve nothing: 1,000 connections announcing 100 MB each leave the
  broker's memory where it was, and other clients are served meanwhile;
- `queued.max.request.bytes`: stalled large frames that spend the budget pause large produce
  requests only, small requests go on, and the budget comes back when the stallers are closed;
- at `--kafka-max-connections` a new connection is closed at once, and counted;
- out of descriptors, the door recovers as soon as descriptors are back.
"""

import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import kwire
from conftest import free_port
from kwire import Conn

pytestmark = pytest.mark.timeout(180)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def api_versions_ms(bootstrap: str) -> float:
    started = time.monotonic()
    with Conn(bootstrap, timeout=5) as c:
        err, versions = c.api_versions()
        assert err == kwire.NONE and kwire.PRODUCE in versions
    return (time.monotonic() - started) * 1000


def kcat_round_trip(bootstrap: str, topic: str, n: int = 5):
    values = [f"{topic}-{i}" for i in range(n)]
    subprocess.run(["kcat", "-b", bootstrap, "-t", topic, "-P", "-X", "topic.request.required.acks=-1"],
                   input="\n".join(values) + "\n", text=True, check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", bootstrap, "-t", topic, "-C", "-e", "-o", "beginning", "-q"],
                         capture_output=True, text=True, check=True, timeout=30).stdout.split()
    assert out == values


def announce(bootstrap: str, size: int, body: bytes = b"") -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(struct.pack(">i", size) + body)
    return s


def wait_for_log(b, text: str, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while text not in b.log:
        assert time.monotonic() < deadline, f"{text!r} not in the broker log"
        time.sleep(0.05)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_idle_connections_are_closed_but_not_while_a_long_poll_waits(broker_factory):
    b = broker_factory(connections_max_idle_ms=1000)
    with Conn(b.bootstrap) as c:
        c.create_topic("idle", 1)
    with Conn(b.bootstrap) as idle, Conn(b.bootstrap) as polling:
        assert idle.api_versions()[0] == kwire.NONE
        started = time.monotonic()
        # A long poll of 2.5 s is not idleness: its answer comes, then the idle clock starts.
        err, hw, records = polling.fetch("idle", 0, 0, max_wait_ms=2500)
        assert (err, hw, records) == (kwire.NONE, 0, b"")
        assert time.monotonic() - started >= 2.0
        assert idle.is_closed(timeout=5), "the idle connection was closed"
        assert polling.is_closed(timeout=5), "and the other one once it went idle"
    wait_for_log(b, "connections.max.idle.ms")
    assert api_versions_ms(b.bootstrap) < 1000


def test_a_frame_that_does_not_arrive_is_closed_after_the_read_timeout(broker_factory):
    b = broker_factory(read_timeout_ms=500)
    s = announce(b.bootstrap, 1000, b"\x00\x03\x00\x04")  # 4 of 1000 bytes, then nothing
    started = time.monotonic()
    s.settimeout(10)
    assert s.recv(10) == b""
    waited = time.monotonic() - started
    assert 0.3 < waited < 5, waited
    s.close()
    wait_for_log(b, "request frame stalled")
    kcat_round_trip(b.bootstrap, "after-stall")


def test_announced_sizes_reserve_nothing_and_others_are_served_meanwhile(broker_factory):
    b = broker_factory(read_timeout_ms=60000)
    api_versions_ms(b.bootstrap)
    before = rss_kib(b.proc.pid)
    header = struct.pack(">hhi", kwire.PRODUCE, 3, 1) + kwire.kstring("x")
    crowd = [announce(b.bootstrap, 100 << 20, header) for _ in range(1000)]
    try:
        time.sleep(1)
        grown_mib = (rss_kib(b.proc.pid) - before) / 1024
        assert grown_mib < 64, f"1,000 announced 100 MB frames cost {grown_mib:.0f} MiB"
        assert api_versions_ms(b.bootstrap) < 100
        kcat_round_trip(b.bootstrap, "beside-the-crowd")
    finally:
        for s in crowd:
            s.close()
    assert b.running()


def test_a_spent_request_pool_pauses_large_frames_only(broker_factory):
    # 1 MiB of budget; four stalled 700 KB produce frames that each sent 400 KB spend it
    # (and the overdraft). Small requests go on; a large produce waits until the stallers
    # are closed by the read timeout, then succeeds.
    b = broker_factory(queued_max_request_bytes=1 << 20, read_timeout_ms=3000)
    with Conn(b.bootstrap) as c:
        assert c.create_topic("pool", 1) == kwire.NONE
    big = kwire.record_batch([b"v" * 1000] * 600)
    header = struct.pack(">hhi", kwire.PRODUCE, 3, 1) + kwire.kstring("staller")
    stallers = [announce(b.bootstrap, 700_000, header + b"\x00" * 400_000) for _ in range(4)]
    try:
        time.sleep(0.5)
        assert api_versions_ms(b.bootstrap) < 200, "small requests are not paused"
        with Conn(b.bootstrap, timeout=30) as c:
            started = time.monotonic()
            err, base = c.produce("pool", 0, big)
            waited = time.monotonic() - started
        assert (err, base) == (kwire.NONE, 0)
        assert waited > 1.0, f"the large produce waited for budget ({waited:.2f} s)"
    finally:
        for s in stallers:
            s.close()
    with Conn(b.bootstrap, timeout=30) as c:
        assert c.produce("pool", 0, big) == (kwire.NONE, 600)


def test_the_connection_cap_closes_new_connections_at_once_and_recovers(broker_factory):
    http = free_port()
    b = broker_factory(kafka_max_connections=20, http_addr=f"127.0.0.1:{http}")
    # The fixture's readiness probe was a connection too: wait until the door counts none.
    deadline = time.monotonic() + 5
    while 'strom_open_connections{door="kafka"} 0' not in metrics(http):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    held = [Conn(b.bootstrap) for _ in range(20)]
    try:
        for c in held:
            assert c.api_versions()[0] == kwire.NONE
        extra = Conn(b.bootstrap)
        started = time.monotonic()
        assert extra.is_closed(timeout=5)
        assert time.monotonic() - started < 1, "closed at once"
        extra.close()
        for c in held[:5]:
            c.close()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert api_versions_ms(b.bootstrap) < 1000
                break
            except (kwire.Closed, OSError):
                assert time.monotonic() < deadline, "the door did not take connections again"
                time.sleep(0.05)
    finally:
        for c in held:
            c.close()
    assert 'strom_connections_refused_total{door="kafka"}' in metrics(http)
    wait_for_log(b, "connection cap")


def test_out_of_descriptors_the_door_recovers_at_once(broker_factory):
    # 160 descriptors for the whole process, a connection cap above it: accept runs out of
    # descriptors (EMFILE) and must neither stall nor spin, and must serve again as soon as
    # the crowd leaves.
    b = broker_factory(start=False, kafka_max_connections=1000, http_addr="off")
    plain = b.command
    b.command = lambda: ["prlimit", "--nofile=160:160", "--", *plain()]
    b.start()
    crowd = []
    try:
        for _ in range(400):
            try:
                crowd.append(announce(b.bootstrap, 64, b""))
            except OSError:
                break
        time.sleep(1)
        assert b.running()
    finally:
        for s in crowd:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            took = api_versions_ms(b.bootstrap)
            break
        except (kwire.Closed, OSError):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert took < 100, took
    # No descriptor is left behind: a second crowd and recovery work the same.
    for _ in range(3):
        assert api_versions_ms(b.bootstrap) < 100
    kcat_round_trip(b.bootstrap, "after-emfile")
    wait_for_log(b, "accept failed")


def api_versions_from(source_ip: str, bootstrap: str) -> socket.socket:
    """A raw ApiVersions v0 from `source_ip`; returns the socket after its answer."""
    host, port = bootstrap.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(5)
    s.bind((source_ip, 0))
    s.connect((host, int(port)))
    s.sendall(struct.pack(">ihhih", 10, 18, 0, 7, -1))
    size, correlation = struct.unpack(">ii", s.recv(8, socket.MSG_WAITALL))
    assert correlation == 7 and size > 4
    return s


def closed_at_once(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_max_connections_per_ip_on_both_doors(broker_factory):
    http = free_port()
    b = broker_factory(max_connections_per_ip=4, http_addr=f"127.0.0.1:{http}")
    deadline = time.monotonic() + 5
    while 'strom_open_connections{door="kafka"} 0' not in metrics(http):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    held = [api_versions_from("127.0.0.1", b.bootstrap) for _ in range(4)]
    try:
        # A fifth from the same address is closed at once; another address is served.
        extra = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        assert closed_at_once(extra)
        extra.close()
        other = api_versions_from("127.0.0.2", b.bootstrap)
        other.close()
        # The HTTP door counts its own: four held, the fifth answered 503 with JSON.
        web = [socket.create_connection(("127.0.0.1", http), timeout=5) for _ in range(4)]
        try:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10)
            assert e.value.code == 503
            assert b"max-connections-per-ip" in e.value.read()
        finally:
            for s in web:
                s.close()
    finally:
        for s in held:
            s.close()
    # Closed connections give their slots back.
    deadline = time.monotonic() + 5
    while True:
        try:
            kcat_round_trip(b.bootstrap, "per-ip")
            break
        except subprocess.CalledProcessError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert 'strom_connections_refused_total{door="kafka_per_ip"}' in metrics(http)
    assert 'strom_connections_refused_total{door="http_per_ip"}' in metrics(http)
    wait_for_log(b, "max.connections.per.ip")
