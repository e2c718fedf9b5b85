"""Cluster mode: three real `strom serve` processes and a real etcd (Debian's etcd-server),
driven by confluent-kafka (librdkafka).

- an RF=3 topic has three in-sync replicas on three brokers, and every replica holds the
  records (each broker's partition directory);
- an idempotent acks=all producer keeps writing while the partition's leader is killed with
  SIGKILL: a new leader within 5 s, no acknowledged record lost, none duplicated; the killed
  broker restarts and rejoins the ISR;
- a follower killed and restarted catches up and rejoins the ISR, and records written while it
  was down are on it;
- acks=all with fewer in-sync replicas than min.insync.replicas is refused
  (NOT_ENOUGH_REPLICAS), nothing written; and the cluster's errors reach the client:
  INVALID_REPLICATION_FACTOR for more replicas than live brokers;
- the controller killed: another broker is elected controller and leads what it led;
- a leader cut off from etcd but not from its clients (its etcd connection goes through a
  proxy the test cuts): it stops leading, a new leader takes over, and no acknowledged
  record is lost; healed, it comes back as a follower;
- etcd itself restarted (SIGKILL, same data dir): the brokers go on, producing works;
- a fourth broker joins under load and `strom cluster rebalance --apply` moves replicas and
  leaders onto it: nothing acknowledged is lost; `strom cluster status` shows the cluster.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port, strom_bin

ETCD = os.environ.get("STROM_ETCD", "/usr/bin/etcd")
SESSION_MS = 3000


class Etcd:
    """A single-member etcd on free loopback ports over a temp dir."""

    def __init__(self):
        if not os.access(ETCD, os.X_OK):
            pytest.fail(f"{ETCD} not found: apt-get install etcd-server (scripts/setup does)")
        self.dir = Path(tempfile.mkdtemp(prefix="strom-etcd-"))
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(self.dir / "etcd.log", "wb")
        self.proc = subprocess.Popen(
            [ETCD, "--data-dir", str(self.dir / "data"), "--name", "default",
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"default={peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if b"true" in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.close()
        pytest.fail("etcd did not start: " + (self.dir / "etcd.log").read_text())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd():
    e = Etcd()
    yield e
    e.close()


class Proxy:
    """A TCP proxy to etcd that the test can cut (every connection closed, new ones refused)
    and heal: one broker's etcd link, while its clients still reach it."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cut_ = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.cut_.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, timeout=2)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data or self.cut_.is_set():
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        self.cut_.set()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def heal(self):
        self.cut_.clear()

    def close(self):
        self.closed = True
        self.cut()
        self.sock.close()


@pytest.fixture
def cluster(etcd, broker_factory):
    """Three brokers of one cluster (a name of its own in etcd)."""
    name = "c" + uuid.uuid4().hex[:8]

    def make(node_id, http=False, **opts):
        if not http:
            opts["http_addr"] = "off"
        return broker_factory(
            node_id=node_id, cluster_etcd=etcd.url, cluster_name=name, http=http,
            cluster_session_timeout_ms=SESSION_MS, replica_lag_time_max_ms=4000, **opts)

    # Broker 1 has the HTTP door (its /metrics).
    brokers = Cluster({i: make(i, http=(i == 1)) for i in (1, 2, 3)})
    brokers.make = make
    wait_for(lambda: len(AdminClient(conf(brokers[1])).list_topics(timeout=5).brokers) == 3,
             15, "three brokers registered")
    return brokers


class Cluster(dict):
    """Brokers by node id; ``.make(node_id)`` starts another of the same cluster."""


def conf(b, **extra):
    return {"bootstrap.servers": b.bootstrap, **extra}


class Load:
    """An idempotent acks=all confluent-kafka producer sending numbered records to `topic` from a
    thread until `stop()`: what was acknowledged (values, and when), and any delivery error."""

    def __init__(self, bootstrap, topic, keyed=False, **extra):
        self.acked, self.ack_times, self.errors = [], [], []
        self.lock = threading.Lock()
        self.topic, self.keyed = topic, keyed
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                           "linger.ms": 2, "message.timeout.ms": 60000, "retry.backoff.ms": 50,
                           "topic.metadata.refresh.interval.ms": 500, **extra})
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self._run)
        self.t.start()

    def _delivered(self, err, m):
        with self.lock:
            if err is None:
                self.acked.append(m.value().decode())
                self.ack_times.append(time.monotonic())
            else:
                self.errors.append(str(err))

    def _run(self):
        i = 0
        while not self.stopping.is_set():
            key = str(i).encode() if self.keyed else None
            try:
                self.p.produce(self.topic, key=key, value=str(i).encode(), on_delivery=self._delivered)
                i += 1
            except BufferError:
                pass
            self.p.poll(0.001)

    def stop(self):
        self.stopping.set()
        self.t.join(30)

    def check_delivered(self):
        """Everything sent was delivered, without an error."""
        assert self.p.flush(60) == 0
        assert not self.errors, self.errors[:5]

    def check_read_back(self, b, timeout=60):
        """Every acknowledged record is in the topic once, read back by a consumer of `b`."""
        values = consume_all(b, self.topic, len(self.acked), timeout=timeout)
        assert len(values) == len(set(values)), "no record twice"
        lost = set(self.acked) - set(values)
        assert not lost, f"{len(lost)} acknowledged records lost"
        return values


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as e:  # a broker being killed: try again
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


def create(admin, topic, partitions, rf, **configs):
    fs = admin.create_topics([NewTopic(topic, partitions, rf, config={k.replace("_", "."): str(v) for k, v in configs.items()})])
    fs[topic].result(20)


def partition_md(admin, topic, p=0):
    return admin.list_topics(topic, timeout=5).topics[topic].partitions[p]


def consume_all(b, topic, expect, timeout=30):
    c = Consumer(conf(b, **{"group.id": "g-" + uuid.uuid4().hex[:6], "auto.offset.reset": "earliest",
                            "enable.auto.commit": False}))
    c.subscribe([topic])
    values = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            values.append(m.value().decode())
    finally:
        c.close()
    return values


def test_rf3_topic_has_three_in_sync_replicas_with_the_records_on_each(cluster):
    b = cluster[1]
    admin = AdminClient(conf(b))
    md = admin.list_topics(timeout=5)
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in (1, 2, 3)
    create(admin, "replicated", 3, 3)
    leaders = set()
    for p in range(3):
        wait_for(lambda: sorted(partition_md(admin, "replicated", p).isrs) == [1, 2, 3], 10, f"ISR of {p}")
        pm = partition_md(admin, "replicated", p)
        assert sorted(pm.replicas) == [1, 2, 3]
        leaders.add(pm.leader)
    assert leaders == {1, 2, 3}, "leaders spread over the brokers"
    # Any broker answers with the same metadata (the cluster's, from etcd).
    # (Each broker applies the metadata from its own watch: within moments, not at once.)
    for other in (cluster[2], cluster[3]):
        oa = AdminClient(conf(other))
        wait_for(lambda: sorted(partition_md(oa, "replicated", 0).replicas) == [1, 2, 3], 5,
                 "the topic on every broker")
    acked = []
    p = Producer(conf(b, acks="all", **{"enable.idempotence": True, "linger.ms": 5}))
    for i in range(3000):
        p.produce("replicated", key=str(i).encode(), value=str(i).encode(),
                  on_delivery=lambda err, m: acked.append(m) if err is None else None)
        p.poll(0)
    assert p.flush(30) == 0
    assert len(acked) == 3000
    ends = {}
    for m in acked:
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    # Each broker's copy of each partition holds the records: every replica's log directory
    # has data (acks=all waited for all three).
    for node, br in cluster.items():
        for part in range(3):
            d = br.data_dir / f"replicated-{part}"
            size = sum(f.stat().st_size for f in d.glob("*.log"))
            assert size > 0, f"broker {node} has no data for partition {part}"
    values = consume_all(b, "replicated", 3000)
    assert sorted(values, key=int) == [str(i) for i in range(3000)]


def test_leader_killed_under_idempotent_acks_all_load_loses_and_duplicates_nothing(cluster):
    admin = AdminClient(conf(cluster[1]))
    create(admin, "failover", 1, 3, min_insync_replicas=2)
    wait_for(lambda: sorted(partition_md(admin, "failover").isrs) == [1, 2, 3], 10, "full ISR")
    leader = partition_md(admin, "failover").leader
    survivors = [n for n in (1, 2, 3) if n != leader]
    bootstrap = ",".join(cluster[n].bootstrap for n in (1, 2, 3))
    load = Load(bootstrap, "failover")
    try:
        wait_for(lambda: len(load.acked) >= 2000, 30, "2000 acknowledged before the kill")
        cluster[leader].kill()
        killed_at = time.monotonic()
        # A new leader among the survivors, in a new epoch.
        admin2 = AdminClient(conf(cluster[survivors[0]]))
        wait_for(lambda: partition_md(admin2, "failover").leader in survivors, 10, "a new leader")
        new_leader_s = time.monotonic() - killed_at
        n_at_kill = len(load.acked)
        wait_for(lambda: len(load.acked) >= n_at_kill + 2000, 40, "2000 more acknowledged after the kill")
        first_after = min(ts for ts in load.ack_times if ts > killed_at)
        failover_s = first_after - killed_at
        # The killed broker comes back as a follower and rejoins the ISR.
        cluster[leader].start()
        wait_for(lambda: sorted(partition_md(admin2, "failover").isrs) == [1, 2, 3], 30, "the restarted broker in the ISR")
    finally:
        load.stop()
    load.check_delivered()
    print(f"new leader after {new_leader_s:.2f} s, first acknowledgement after {failover_s:.2f} s")
    assert new_leader_s < 5.0, f"new leader after {new_leader_s:.2f} s"
    assert failover_s < 5.0, f"first acknowledged produce {failover_s:.2f} s after the kill"
    values = load.check_read_back(cluster[survivors[0]])
    # In order: the producer's sequence (idempotence keeps retries in order).
    ints = [int(v) for v in values]
    assert ints == sorted(ints)


def test_a_restarted_follower_catches_up_and_min_insync_replicas_is_enforced(cluster):
    admin = AdminClient(conf(cluster[1]))
    create(admin, "catchup", 1, 3, min_insync_replicas=3)
    wait_for(lambda: sorted(partition_md(admin, "catchup").isrs) == [1, 2, 3], 10, "full ISR")
    leader = partition_md(admin, "catchup").leader
    follower = next(n for n in (1, 2, 3) if n != leader)
    lb = cluster[leader]
    p = Producer(conf(lb, acks="all", **{"message.timeout.ms": 8000, "retries": 0}))
    cluster[follower].kill()
    # The follower leaves the ISR (the leader shrinks it after replica.lag.time.max.ms), then
    # acks=all is refused with NOT_ENOUGH_REPLICAS: min.insync.replicas is 3.
    wait_for(lambda: follower not in partition_md(admin, "catchup").isrs, 20, "ISR shrink")
    results = []
    p.produce("catchup", value=b"refused", on_delivery=lambda err, m: results.append(err))
    p.flush(15)
    assert results and results[0] is not None
    assert results[0].name() in ("NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND"), results[0]
    # acks=1 still works, with two replicas.
    p1 = Producer(conf(lb, acks=1))
    for i in range(500):
        p1.produce("catchup", value=b"while-down-%d" % i)
    assert p1.flush(15) == 0
    cluster[follower].start()
    wait_for(lambda: sorted(partition_md(admin, "catchup").isrs) == [1, 2, 3], 30, "the follower back in the ISR")
    # Now acks=all passes again, and the follower's copy holds what was written while it was down.
    ok = []
    p.produce("catchup", value=b"accepted", on_delivery=lambda err, m: ok.append(err))
    p.flush(15)
    assert ok == [None]
    d = cluster[follower].data_dir / "catchup-0"
    data = b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))
    assert b"while-down-499" in data and b"accepted" in data
    # The ISR changes, replication lag and the cluster's counts are in /metrics.
    metrics = urllib.request.urlopen(cluster[1].http + "/metrics", timeout=5).read().decode()
    assert "strom_cluster_brokers 3" in metrics
    assert "strom_cluster_offline_partitions 0" in metrics
    if leader == 1:
        assert "strom_isr_shrinks_total 0" not in metrics and "strom_isr_expands_total 0" not in metrics
        assert 'strom_replica_lag_records{topic="catchup",partition="0"}' in metrics
    # More replicas than live brokers: INVALID_REPLICATION_FACTOR.
    with pytest.raises(KafkaException) as e:
        create(admin, "too-many", 1, 4)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"


def controller_of(b):
    return AdminClient(conf(b)).list_topics(timeout=5).controller_id


def test_controller_killed_another_is_elected_and_leads_its_partitions(cluster):
    admin = AdminClient(conf(cluster[1]))
    create(admin, "ctl", 3, 3)
    for p in range(3):
        wait_for(lambda: len(partition_md(admin, "ctl", p).isrs) == 3, 10, f"ISR of {p}")
    ctl = controller_of(cluster[1])
    led = [p for p in range(3) if partition_md(admin, "ctl", p).leader == ctl]
    assert led, "the controller leads a partition of the three"
    survivors = [n for n in (1, 2, 3) if n != ctl]
    cluster[ctl].kill()
    killed = time.monotonic()
    other = AdminClient(conf(cluster[survivors[0]]))
    wait_for(lambda: controller_of(cluster[survivors[0]]) in survivors, 10, "a new controller")
    for p in led:
        wait_for(lambda: partition_md(other, "ctl", p).leader in survivors, 10, f"a new leader of {p}")
    took = time.monotonic() - killed
    assert took < 8, f"new controller and leaders after {took:.1f} s"
    acked = []
    pr = Producer({"bootstrap.servers": ",".join(cluster[n].bootstrap for n in survivors),
                   "acks": "all", "enable.idempotence": True})
    for i in range(300):
        pr.produce("ctl", value=b"after-%d" % i, on_delivery=lambda err, m: acked.append(err))
    assert pr.flush(30) == 0
    assert acked.count(None) == 300


def test_a_leader_cut_off_from_etcd_stops_leading_and_loses_nothing_acknowledged(etcd, broker_factory):
    name = "c" + uuid.uuid4().hex[:8]
    proxy = Proxy(etcd.client_port)
    try:
        brokers = {}
        for i in (1, 2, 3):
            url = proxy.url if i == 1 else etcd.url
            brokers[i] = broker_factory(node_id=i, cluster_etcd=url, cluster_name=name,
                                        cluster_session_timeout_ms=SESSION_MS, replica_lag_time_max_ms=4000,
                                        http_addr="off")
        admin = AdminClient(conf(brokers[2]))
        wait_for(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 15, "three brokers")
        # Broker 1 leads: the replicas are assigned with it first.
        fs = admin.create_topics([NewTopic("isolated", num_partitions=1, replica_assignment=[[1, 2, 3]],
                                           config={"min.insync.replicas": "2"})])
        fs["isolated"].result(20)
        wait_for(lambda: sorted(partition_md(admin, "isolated").isrs) == [1, 2, 3], 10, "full ISR")
        assert partition_md(admin, "isolated").leader == 1
        load = Load(",".join(b.bootstrap for b in brokers.values()), "isolated")
        try:
            wait_for(lambda: len(load.acked) >= 1000, 30, "1000 acknowledged")
            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: partition_md(admin, "isolated").leader in (2, 3), 15, "a leader other than 1")
            moved_s = time.monotonic() - cut_at
            # Broker 1, still reachable by clients, fenced itself.
            wait_for(lambda: "fenced" in brokers[1].log, 10, "broker 1 fenced")
            n = len(load.acked)
            wait_for(lambda: len(load.acked) >= n + 1000, 40, "1000 more acknowledged by the new leader")
            proxy.heal()
            wait_for(lambda: sorted(partition_md(admin, "isolated").isrs) == [1, 2, 3], 40,
                     "broker 1 back in the ISR as a follower")
        finally:
            load.stop()
        load.check_delivered()
        print(f"leadership moved {moved_s:.2f} s after the cut")
        assert partition_md(admin, "isolated").leader in (2, 3)
        load.check_read_back(brokers[2])
    finally:
        proxy.close()


def test_etcd_restarted_the_cluster_goes_on(cluster, etcd):
    admin = AdminClient(conf(cluster[1]))
    create(admin, "survives-etcd", 1, 3)
    wait_for(lambda: len(partition_md(admin, "survives-etcd").isrs) == 3, 10, "full ISR")
    p = Producer({"bootstrap.servers": cluster[1].bootstrap, "acks": "all", "enable.idempotence": True})
    oks = []
    for i in range(200):
        p.produce("survives-etcd", value=b"before-%d" % i, on_delivery=lambda err, m: oks.append(err))
    assert p.flush(20) == 0
    etcd.proc.kill()
    etcd.proc.wait(10)
    time.sleep(1)
    etcd.proc = subprocess.Popen(etcd.proc.args, stdout=etcd.log, stderr=subprocess.STDOUT)
    # (No wait for etcd: the brokers wait it out; the CreateTopics below retries in the broker.)
    for i in range(200):
        p.produce("survives-etcd", value=b"after-%d" % i, on_delivery=lambda err, m: oks.append(err))
    assert p.flush(60) == 0
    assert oks.count(None) == 400, [e for e in oks if e is not None][:3]
    # The metadata is live again: a new topic can be created.
    create(admin, "after-etcd-restart", 1, 3)
    wait_for(lambda: len(partition_md(admin, "after-etcd-restart").isrs) == 3, 20, "new topic's ISR")
    values = consume_all(cluster[2], "survives-etcd", 400)
    assert len(set(values)) == 400


def strom_cli(*args, timeout=180):
    r = subprocess.run([strom_bin(), *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"strom {' '.join(args)}: {r.stderr}"
    return r.stdout


def test_a_fourth_broker_takes_its_share_under_load_and_nothing_is_lost(cluster):
    admin = AdminClient(conf(cluster[1]))
    strom_cli("topic", "create", "grow", "-p", "4", "-r", "2", "--bootstrap", cluster[1].bootstrap)
    for p in range(4):
        wait_for(lambda: len(partition_md(admin, "grow", p).isrs) == 2, 10, f"ISR of {p}")
    load = Load(cluster[1].bootstrap, "grow", keyed=True, **{"linger.ms": 5, "topic.metadata.refresh.interval.ms": 1000})
    try:
        wait_for(lambda: len(load.acked) >= 2000, 30, "2000 acknowledged")
        cluster[4] = cluster.make(4)
        wait_for(lambda: len(admin.list_topics(timeout=5).brokers) == 4, 15, "four brokers")
        plan = strom_cli("cluster", "rebalance", "--bootstrap", cluster[1].bootstrap)
        assert "partitions to move" in plan
        strom_cli("cluster", "rebalance", "--apply", "--timeout-s", "120", "--bootstrap", cluster[1].bootstrap)
        on_4 = [q for q in range(4) if 4 in partition_md(admin, "grow", q).replicas]
        assert on_4, "broker 4 holds replicas after the rebalance"
        for q in on_4:
            wait_for(lambda: 4 in partition_md(admin, "grow", q).isrs, 20, f"broker 4 in the ISR of {q}")
        n = len(load.acked)
        wait_for(lambda: len(load.acked) >= n + 1000, 30, "1000 more acknowledged after the moves")
    finally:
        load.stop()
    load.check_delivered()
    status = json.loads(strom_cli("cluster", "status", "--json", "--bootstrap", cluster[2].bootstrap))
    assert sorted(b["id"] for b in status["brokers"]) == [1, 2, 3, 4]
    assert status["offline"] == [] and status["reassigning"] == []
    text = strom_cli("cluster", "status", "--bootstrap", cluster[4].bootstrap)
    assert "4 brokers" in text and "controller" in text
    load.check_read_back(cluster[4])


def test_the_http_door_creates_replicated_topics_and_names_the_leader_elsewhere(cluster):
    import requests
    http = cluster[1].http
    r = requests.post(f"{http}/topics", json={"name": "via-http", "partitions": 3, "replication_factor": 3})
    assert r.status_code in (200, 201), r.text
    admin = AdminClient(conf(cluster[1]))
    for p in range(3):
        wait_for(lambda: len(partition_md(admin, "via-http", p).isrs) == 3, 10, f"ISR of {p}")
    led = [p for p in range(3) if partition_md(admin, "via-http", p).leader == 1]
    elsewhere = [p for p in range(3) if partition_md(admin, "via-http", p).leader != 1]
    assert led and elsewhere
    # Led here: acknowledged once the three replicas have it (acks=all).
    r = requests.post(f"{http}/topics/via-http/records", json={"records": [{"value": "hello", "partition": led[0]}]})
    assert r.status_code == 200, r.text
    assert r.json()["offsets"] == [{"partition": led[0], "offset": 0}]
    # Led elsewhere: a JSON 421 naming the reason, nothing written here.
    r = requests.post(f"{http}/topics/via-http/records", json={"records": [{"value": "x", "partition": elsewhere[0]}]})
    assert r.status_code == 421, r.text
    assert r.json()["error"]["code"] == "not_leader_or_follower"
    assert "leader" in r.json()["error"]["message"]
    # More replicas than brokers: 400 with its Kafka name.
    r = requests.post(f"{http}/topics", json={"name": "too-wide", "replication_factor": 5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_replication_factor", r.text
    # The record is on the followers too, read back by a Kafka consumer from the cluster.
    values = consume_all(cluster[2], "via-http", 1)
    assert values == ["hello"]
    assert requests.delete(f"{http}/topics/via-http").status_code == 204
    wait_for(lambda: "via-http" not in AdminClient(conf(cluster[3])).list_topics(timeout=5).topics, 10,
             "the topic gone on every broker")


def test_a_follower_behind_whole_segments_and_the_leaders_log_start_catches_up(cluster):
    admin = AdminClient(conf(cluster[1]))
    fs = admin.create_topics([NewTopic("behind", num_partitions=1, replica_assignment=[[1, 2, 3]],
                                       config={"segment.bytes": "32768"})])
    fs["behind"].result(20)
    wait_for(lambda: sorted(partition_md(admin, "behind").isrs) == [1, 2, 3], 10, "full ISR")
    cluster[3].kill()
    wait_for(lambda: 3 not in partition_md(admin, "behind").isrs, 20, "broker 3 out of the ISR")
    p = Producer(conf(cluster[1], acks=1, **{"linger.ms": 5, "batch.size": 8192}))
    errs = []
    for i in range(2000):
        p.produce("behind", value=(b"r%05d-" % i) + b"x" * 500,
                  on_delivery=lambda err, m: errs.append(err) if err else None)
        p.poll(0)
    assert p.flush(30) == 0
    assert not errs, errs[:3]
    # The leader drops everything below 1500 while broker 3 is away (as retention would).
    strom_cli("topic", "delete-records", "behind", "--partition", "0", "--before", "1500",
              "--bootstrap", cluster[1].bootstrap)
    cluster[3].start()
    wait_for(lambda: sorted(partition_md(admin, "behind").isrs) == [1, 2, 3], 30, "broker 3 back in the ISR")
    d = cluster[3].data_dir / "behind-0"
    bases = sorted(int(f.stem) for f in d.glob("*.log"))
    assert bases and bases[0] >= 1500, f"broker 3 starts at the leader's log start: {bases[:3]}"
    data = b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))
    assert b"r01999-" in data and b"r00000-" not in data
    assert "behind the leader's log start" in cluster[3].log


def test_a_rolling_restart_under_load_loses_nothing_and_leaders_move_at_once(cluster):
    admin = AdminClient(conf(cluster[1]))
    create(admin, "rolling", 3, 3, min_insync_replicas=2)
    for q in range(3):
        wait_for(lambda: len(partition_md(admin, "rolling", q).isrs) == 3, 10, f"ISR of {q}")
    load = Load(",".join(cluster[n].bootstrap for n in (1, 2, 3)), "rolling", keyed=True)
    moved = []
    try:
        wait_for(lambda: len(load.acked) >= 1000, 30, "1000 acknowledged")
        for n in (1, 2, 3):
            others = [m for m in (1, 2, 3) if m != n]
            oa = AdminClient(conf(cluster[others[0]]))
            led = [q for q in range(3) if partition_md(oa, "rolling", q).leader == n]
            began = time.monotonic()
            cluster[n].stop()  # SIGTERM: a controlled shutdown
            for q in led:
                wait_for(lambda: partition_md(oa, "rolling", q).leader in others, 10, f"{q} led elsewhere")
            moved.append(time.monotonic() - began)
            cluster[n].start()
            for q in range(3):
                wait_for(lambda: len(partition_md(oa, "rolling", q).isrs) == 3, 30, f"{n} back in the ISR of {q}")
        k = len(load.acked)
        wait_for(lambda: len(load.acked) >= k + 500, 30, "500 more acknowledged")
    finally:
        load.stop()
    load.check_delivered()
    print("leadership moved after a SIGTERM in " + ", ".join(f"{m:.2f} s" for m in moved))
    # A clean shutdown revokes the lease: no waiting for the session timeout.
    assert max(moved) < SESSION_MS / 1000, moved
    load.check_read_back(cluster[1])


def test_a_disk_full_follower_leaves_the_isr_and_catches_up_once_space_returns(etcd, broker_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    name = "c" + uuid.uuid4().hex[:8]
    opts = dict(cluster_etcd=etcd.url, cluster_name=name, cluster_session_timeout_ms=SESSION_MS,
                replica_lag_time_max_ms=3000, http_addr="off")
    b1 = broker_factory(node_id=1, **opts)
    b2 = broker_factory(node_id=2, **opts)
    b3 = broker_factory(node_id=3, start=False, **opts)
    target = str(b3.data_dir)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", target], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount tmpfs failed: {r.stderr.strip()}")
    try:
        b3.start()
        admin = AdminClient(conf(b1))
        wait_for(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 15, "three brokers")
        fs = admin.create_topics([NewTopic("full", num_partitions=1, replica_assignment=[[1, 2, 3]],
                                           config={"min.insync.replicas": "2"})])
        fs["full"].result(20)
        wait_for(lambda: sorted(partition_md(admin, "full").isrs) == [1, 2, 3], 10, "full ISR")
        acked, errs = [], []
        p = Producer(conf(b1, acks="all", **{"enable.idempotence": True, "linger.ms": 5,
                                            "message.timeout.ms": 60000}))
        for i in range(6000):
            p.produce("full", value=(b"f%05d-" % i) + b"y" * 1000,
                      on_delivery=lambda err, m: (errs if err else acked).append(err or m.offset()))
            p.poll(0)
        assert p.flush(60) == 0
        assert not errs, errs[:3]
        assert len(acked) == 6000, "every record acknowledged by the two in-sync replicas"
        assert 3 not in partition_md(admin, "full").isrs, "the full follower left the ISR"
        assert b3.running(), "the follower did not stop on a full disk"
        wait_for(lambda: "replica append failed" in b3.log, 10, "the follower's disk-full warning")
        # Space returns: it copies the rest and rejoins.
        r = subprocess.run(["mount", "-o", "remount,size=128m", target], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: sorted(partition_md(admin, "full").isrs) == [1, 2, 3], 40, "the follower back in the ISR")
        data = b"".join(f.read_bytes() for f in sorted((b3.data_dir / "full-0").glob("*.log")))
        assert b"f05999-" in data
    finally:
        if os.environ.get("DEBUG_CLUSTER"):
            print("\n".join(l for l in b1.log.splitlines() if "ISR" in l or "WARN" in l)[-3000:])
        b3.kill()
        subprocess.run(["umount", target], capture_output=True)


def test_unclean_leader_election_only_where_the_topic_enables_it(cluster):
    """Replicas [1, 2]; 2 is killed and leaves the ISR, then the leader 1 dies, and 2 comes
    back: the topic with `unclean.leader.election.enable=true` is led by 2 (out of sync; what
    only 1 had is lost, as Kafka warns), the default topic stays offline until 1 returns."""
    admin = AdminClient(conf(cluster[3]))
    for name, configs in (("clean", {}), ("dirty", {"unclean.leader.election.enable": "true"})):
        fs = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=-1,
                                             replica_assignment=[[1, 2]], config=configs)])
        fs[name].result(20)
    for t in ("clean", "dirty"):
        wait_for(lambda: sorted(partition_md(admin, t).isrs) == [1, 2] and partition_md(admin, t).leader == 1,
                 15, f"{t}: ISR [1, 2] led by 1")
    # acks=all: on both replicas before 2 goes.
    p_all = Producer(conf(cluster[1], acks="all"))
    for t in ("clean", "dirty"):
        p_all.produce(t, value=b"before")
    assert p_all.flush(15) == 0
    p = Producer(conf(cluster[1], acks=1))
    cluster[2].kill()
    for t in ("clean", "dirty"):
        wait_for(lambda: partition_md(admin, t).isrs == [1], 20, f"{t}: 2 leaves the ISR")
    for t in ("clean", "dirty"):
        p.produce(t, value=b"only-on-1")
    assert p.flush(15) == 0
    cluster[1].kill()
    wait_for(lambda: partition_md(admin, "dirty").leader == -1, 20, "offline once 1 died")
    cluster[2].start()
    wait_for(lambda: partition_md(admin, "dirty").leader == 2, 30, "dirty: 2 elected uncleanly")
    md = partition_md(admin, "dirty")
    assert md.isrs == [2]
    assert partition_md(admin, "clean").leader == -1, "no unclean election by default"
    # The new leader takes writes; it has what it had replicated, not what only 1 had.
    p2 = Producer(conf(cluster[2], acks="all"))
    p2.produce("dirty", value=b"after")
    assert p2.flush(15) == 0
    assert consume_all(cluster[2], "dirty", 2, timeout=20) == ["before", "after"]
    # 1 comes back: the clean topic is led again, with the record only 1 had.
    cluster[1].start()
    wait_for(lambda: partition_md(admin, "clean").leader == 1, 30, "clean: led by 1 again")
    assert consume_all(cluster[1], "clean", 2, timeout=20) == ["before", "only-on-1"]


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_topic_configs_changed_on_one_broker_apply_on_every_broker(cluster):
    """IncrementalAlterConfigs and the legacy AlterConfigs on one broker change the topic's
    record in etcd; every broker's copy (DescribeConfigs on each) follows."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    create(AdminClient(conf(cluster[1])), "configured", 2, 3)

    def described(node, name):
        a = AdminClient(conf(cluster[node]))
        res = ConfigResource(ResourceType.TOPIC, "configured")
        return a.describe_configs([res])[res].result(10)[name].value

    a2 = AdminClient(conf(cluster[2]))
    res = ConfigResource(ResourceType.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("unclean.leader.election.enable", "true", incremental_operation=AlterConfigOpType.SET)])
    a2.incremental_alter_configs([res])[res].result(20)
    for node in (1, 2, 3):
        wait_for(lambda: described(node, "retention.ms") == "123456", 10, f"broker {node} applies it")
        assert described(node, "unclean.leader.election.enable") == "true"
    # A bad value is refused by the broker asked, and nothing changes anywhere.
    bad = ConfigResource(ResourceType.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a2.incremental_alter_configs([bad])[bad].result(20)
    assert e.value.args[0].name() == "INVALID_CONFIG"
    # The legacy AlterConfigs (replace every override) on broker 3.
    legacy = ConfigResource(ResourceType.TOPIC, "configured", set_config={"segment.ms": "3600000"})
    a3 = AdminClient(conf(cluster[3]))  # kept alive until the future is done
    a3.alter_configs([legacy])[legacy].result(20)
    for node in (1, 2, 3):
        wait_for(lambda: described(node, "segment.ms") == "3600000", 10, f"broker {node} applies the replace")
        assert described(node, "retention.ms") == "604800000", "back to the default"
    # A broker restarted later reads them from etcd.
    cluster[1].restart()
    wait_for(lambda: described(1, "segment.ms") == "3600000", 30, "the restarted broker has them")


def test_a_producer_auto_creates_a_topic_in_the_cluster(cluster):
    """`auto.create.topics.enable` (on by default) in cluster mode: a producer's Metadata
    request for an unknown topic creates it in the cluster's metadata, so that every broker
    has it and its records are readable through any broker; a client that opts out
    (allow.auto.create.topics=false on a consumer) creates nothing."""
    p = Producer(conf(cluster[2], acks="all"))
    for i in range(10):
        p.produce("made-by-a-producer", value=b"auto-%d" % i)
    assert p.flush(20) == 0
    for node in (1, 2, 3):
        md = AdminClient(conf(cluster[node])).list_topics(timeout=5).topics
        assert "made-by-a-producer" in md and md["made-by-a-producer"].error is None, node
        assert len(md["made-by-a-producer"].partitions) == 1
    assert sorted(consume_all(cluster[3], "made-by-a-producer", 10)) == sorted(f"auto-{i}" for i in range(10))
    c = Consumer(conf(cluster[1], **{"group.id": "no-auto", "allow.auto.create.topics": False}))
    c.subscribe(["never-made"])
    c.poll(2)
    c.close()
    assert "never-made" not in AdminClient(conf(cluster[2])).list_topics(timeout=5).topics
