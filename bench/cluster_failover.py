"""Cluster mode (issue 19): failover time as a distribution over repeated SIGKILLs of the leader.

    .venv/bin/python bench/cluster_failover.py [KILLS]       (default 20)

Starts its own etcd (Debian's etcd-server) and three `strom serve` (release build unless
STROM_BIN; --cluster-session-timeout-ms 3000), creates an RF=3 topic with one partition and
min.insync.replicas=2, and runs an idempotent acks=all confluent-kafka producer sending a
record every millisecond. Each round: wait for a full ISR, SIGKILL the partition's leader, and
time

- "elected": kill -> a new leader in the metadata of a surviving broker;
- "first ack": kill -> the first acknowledgement of a record produced after the kill
  (the failover a producer sees);

then restart the killed broker. At the end every acknowledged record is read back: none lost,
none twice. Prints each round and p50 / p90 / p99 / max of both.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("STROM_BIN", str(ROOT / "target" / "release" / "strom"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise SystemExit(f"timed out: {what}")


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    work = Path(tempfile.mkdtemp(prefix="strom-failover-"))
    procs = {}
    try:
        ec, ep = free_port(), free_port()
        etcd = subprocess.Popen(
            ["etcd", "--data-dir", str(work / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{ec}",
             "--advertise-client-urls", f"http://127.0.0.1:{ec}", "--listen-peer-urls", f"http://127.0.0.1:{ep}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{ep}", "--initial-cluster", f"default=http://127.0.0.1:{ep}"],
            stdout=open(work / "etcd.log", "wb"), stderr=subprocess.STDOUT)
        procs["etcd"] = etcd
        wait(lambda: b"true" in urllib.request.urlopen(f"http://127.0.0.1:{ec}/health", timeout=1).read(), 20, "etcd")
        ports = {i: free_port() for i in (1, 2, 3)}

        def start(i):
            procs[i] = subprocess.Popen(
                [BIN, "serve", "--node-id", str(i), "--cluster-etcd", f"http://127.0.0.1:{ec}",
                 "--kafka-addr", f"127.0.0.{i}:{ports[i]}", "--http-addr", "off", "--grpc-addr", "off",
                 "--cluster-session-timeout-ms", "3000", "--data-dir", str(work / f"d{i}")],
                stdout=open(work / f"b{i}.log", "ab"), stderr=subprocess.STDOUT)

        for i in (1, 2, 3):
            start(i)
        boot = ",".join(f"127.0.0.{i}:{ports[i]}" for i in (1, 2, 3))
        admins = {i: AdminClient({"bootstrap.servers": f"127.0.0.{i}:{ports[i]}"}) for i in (1, 2, 3)}
        wait(lambda: all(len(admins[i].list_topics(timeout=2).brokers) == 3 for i in (1, 2, 3)), 30, "3 brokers")
        admins[1].create_topics([NewTopic("failover", 1, 3, config={"min.insync.replicas": "2"})])["failover"].result(20)

        def part(i):
            return admins[i].list_topics("failover", timeout=2).topics["failover"].partitions[0]

        wait(lambda: len(part(1).isrs) == 3, 20, "full ISR")
        acked, errors, ack_times = [], [], []
        lock = threading.Lock()

        def delivered(err, m):
            with lock:
                if err is None:
                    acked.append(m.value().decode())
                    ack_times.append((time.monotonic(), int(m.value().decode())))
                else:
                    errors.append(str(err))

        p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True, "linger.ms": 1,
                      "message.timeout.ms": 120000, "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
                      "topic.metadata.refresh.interval.ms": 250, "log_level": 0})
        stop = threading.Event()
        sent_at = {}

        def produce():
            i = 0
            while not stop.is_set():
                try:
                    p.produce("failover", value=str(i).encode(), on_delivery=delivered)
                    sent_at[i] = time.monotonic()
                    i += 1
                except BufferError:
                    pass
                p.poll(0.001)
                time.sleep(0.001)

        t = threading.Thread(target=produce)
        t.start()
        elected, first_ack = [], []
        try:
            wait(lambda: len(acked) > 500, 30, "first acks")
            for k in range(kills):
                wait(lambda: len(part(1 if procs[1].poll() is None else 2).isrs) == 3, 60, "full ISR")
                any_live = next(i for i in (1, 2, 3) if procs[i].poll() is None)
                leader = part(any_live).leader
                survivor = next(i for i in (1, 2, 3) if i != leader)
                procs[leader].send_signal(signal.SIGKILL)
                procs[leader].wait()
                killed = time.monotonic()
                wait(lambda: part(survivor).leader not in (leader, -1), 30, "new leader")
                e = time.monotonic() - killed
                with lock:
                    n = len(ack_times)

                def acked_after():
                    with lock:
                        return any(sent_at.get(v, 0) > killed for _, v in ack_times[n:])

                wait(acked_after, 60, "an ack after the kill")
                with lock:
                    f = min(ts for ts, v in ack_times[n:] if sent_at.get(v, 0) > killed) - killed
                elected.append(e)
                first_ack.append(f)
                print(f"kill {k + 1:2}: leader {leader}, elected after {e:.2f} s, first ack after {f:.2f} s", flush=True)
                start(leader)
        finally:
            stop.set()
            t.join(30)
        p.flush(60)
        c = Consumer({"bootstrap.servers": boot, "group.id": "check", "auto.offset.reset": "earliest"})
        c.subscribe(["failover"])
        seen = []
        end = time.monotonic() + 60
        while len(seen) < len(acked) and time.monotonic() < end:
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen.append(m.value().decode())
        c.close()
        lost = len(set(acked) - set(seen))
        dups = len(seen) - len(set(seen))
        print(f"acknowledged {len(acked)}, read back {len(seen)}: lost {lost}, duplicated {dups}, producer errors {len(errors)}")
        for name, xs in (("elected", elected), ("first ack", first_ack)):
            print(f"{name}: p50 {quantile(xs, 0.5):.2f} s, p90 {quantile(xs, 0.9):.2f} s, "
                  f"p99 {quantile(xs, 0.99):.2f} s, max {max(xs):.2f} s, mean {statistics.mean(xs):.2f} s over {len(xs)} kills")
    finally:
        for pr in procs.values():
            if pr.poll() is None:
                pr.kill()
                pr.wait()
        if os.environ.get("KEEP"):
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
