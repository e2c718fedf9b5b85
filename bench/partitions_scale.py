#!/usr/bin/env python3
"""Many partitions and big logs: what 10,000 partitions cost a broker, and how long a broker
takes to restart with them or with a large log.

    .venv/bin/python bench/partitions_scale.py target/release/strom [--topics 100] [--partitions 100]
        [--rounds 3] [--big-gb 20 --big-partitions 200]

Phases, each on a fresh data directory and broker (every broker started by this script on free
ports of 127.0.0.1, `--log-level warn`):
1. scale: TOPICS x PARTITIONS partitions created with confluent-kafka's AdminClient (10 topics
   per CreateTopics request); create time; after 5 s, 10 s idle: CPU (utime+stime of the broker
   from /proc), RSS, open descriptors; then `strom bench` producing 1 KB records over every
   partition of every topic for 10 s (throughput, descriptors at their peak); then ROUNDS
   rounds of the one-partition `strom bench` (10 s, 1 KB, batch 1000) against this broker and
   against a broker without the many partitions, alternating; then the restart times of this
   broker after a clean stop (SIGTERM) with the page cache dropped first (when run as root:
   every file is read from the disk), after a clean stop with a warm cache, and after kill -9.
2. big (with --big-gb): a BIG_GB log in BIG_PARTITIONS partitions written by `strom bench`, then
   the restart times after a clean stop and after kill -9 (right after the writes, page cache
   dirty).

A restart's time: from the process start until a Metadata request lists every topic and a
one-record produce and a fetch of it succeed (kcat-free: confluent-kafka, one new client per
try, the first try when the port accepts). One JSON line per measurement, then a summary.
"""

import argparse
import json
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

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    def __init__(self, binary, data_dir):
        self.binary, self.data_dir = binary, data_dir
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.started = time.monotonic()
        self.listening = None
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data-dir", self.data_dir, "--kafka-addr", self.bootstrap,
             "--http-addr", "off", "--grpc-addr", "off", "--log-level", "warn"],
            stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                self.listening = time.monotonic() - self.started
                return
            except OSError:
                time.sleep(0.005)
        raise RuntimeError("broker did not listen")

    def stop(self, sig=signal.SIGTERM):
        t = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)
        return time.monotonic() - t

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready(broker, topics, probe_topic):
    """Seconds from the broker's start until it serves: every topic in Metadata, one record
    produced (acks=all) and fetched back."""
    while True:
        try:
            a = AdminClient({"bootstrap.servers": broker.bootstrap})
            md = a.list_topics(timeout=2)
            if sum(1 for t in md.topics if not t.startswith("__")) < topics:
                time.sleep(0.01)
                continue
            p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
            got = []
            p.produce(probe_topic, value=b"probe", partition=0,
                      on_delivery=lambda e, m: got.append((e, m.offset() if m else None)))
            p.flush(10)
            if not got or got[0][0] is not None:
                time.sleep(0.01)
                continue
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe",
                          "enable.auto.commit": False})
            c.assign([TopicPartition(probe_topic, 0, got[0][1])])
            m = c.poll(10)
            c.close()
            if m is None or m.error():
                continue
            return time.monotonic() - broker.started
        except Exception:  # noqa: BLE001 - not up yet: try again
            time.sleep(0.01)


def create(broker, prefix, topics, partitions):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    t = time.monotonic()
    names = [f"{prefix}-{i}" for i in range(topics)]
    for k in range(0, topics, 10):
        fs = a.create_topics([NewTopic(n, partitions, 1) for n in names[k:k + 10]],
                             operation_timeout=120, request_timeout=120)
        for f in fs.values():
            f.result(timeout=300)
    return time.monotonic() - t


def bench(binary, broker, *args):
    out = subprocess.run([binary, "bench", "--bootstrap", broker.bootstrap, "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def emit(**kv):
    print(json.dumps(kv), flush=True)
    return kv


def drop_caches():
    """Empties the page cache (root only), so that a start reads its files from the disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def restart_times(broker, topics, probe):
    """Restarts of `broker`: after a clean stop on a cold page cache (when it can be
    dropped), after a clean stop on a warm one, after kill -9. {name: seconds}."""
    out = {"clean_stop_s": broker.stop(signal.SIGTERM)}
    cold = drop_caches()
    broker.start()
    prefix = "cold_" if cold else ""
    out[prefix + "listening_after_clean_stop_s"] = broker.listening
    out[prefix + "ready_after_clean_stop_s"] = ready(broker, topics, probe)
    if cold:
        broker.stop(signal.SIGTERM)
        broker.start()
        out["listening_after_clean_stop_s"] = broker.listening
        out["ready_after_clean_stop_s"] = ready(broker, topics, probe)
    broker.stop(signal.SIGKILL)
    broker.start()
    out["listening_after_kill9_s"] = broker.listening
    out["ready_after_kill9_s"] = ready(broker, topics, probe)
    return {k: round(v, 2) for k, v in out.items()}


def scale_phase(a, root):
    b = Broker(a.binary, os.path.join(root, "scale"))
    b.start()
    n = a.topics * a.partitions
    base_fds = b.fds()
    created = create(b, "scale", a.topics, a.partitions)
    emit(phase="create", partitions=n, seconds=round(created, 2), fds=b.fds())
    time.sleep(5)
    cpu0 = b.cpu_s()
    time.sleep(10)
    idle = emit(phase="idle", partitions=n, cpu_percent=round((b.cpu_s() - cpu0) * 10, 2),
                rss_mb=round(b.rss_mb(), 1), fds=b.fds(), fds_before_topics=base_fds)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], b.fds())
            time.sleep(0.2)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    r = bench(a.binary, b, "--topic", "scale", "--topics", str(a.topics), "--partitions",
              str(a.partitions), "--duration-secs", "10", "--warmup-secs", "2")
    stop.set()
    w.join()
    emit(phase="produce-all", partitions=n, produce_mb_s=round(r["produce_mb_per_s"], 1),
         consume_mb_s=round(r["consume_mb_per_s"], 1), peak_fds=peak[0], fds_after=b.fds())
    plain = Broker(a.binary, os.path.join(root, "plain"))
    plain.start()
    one = {"with": [], "without": []}
    for k in range(a.rounds):
        for label, br in (("with", b), ("without", plain)):
            r = bench(a.binary, br, "--topic", f"single-{k}", "--duration-secs", "10",
                      "--warmup-secs", "2")
            one[label].append(r["produce_mb_per_s"])
            emit(phase="one-partition", many_partitions=label == "with", round=k,
                 produce_mb_s=round(r["produce_mb_per_s"], 1),
                 consume_mb_s=round(r["consume_mb_per_s"], 1),
                 e2e_p99_ms=r["e2e_latency_ms"]["p99"])
    plain.stop()
    restart = emit(phase="restart", partitions=n, **restart_times(b, a.topics + a.rounds, "scale-0"))
    b.stop()
    return {"partitions": n, "create_s": round(created, 2), "idle": idle,
            "one_partition_mb_s_median": {k: round(statistics.median(v), 1) for k, v in one.items()},
            "restart": restart}


def big_phase(a, root):
    b = Broker(a.binary, os.path.join(root, "big"))
    b.start()
    records = int(a.big_gb * 1e9 / 1024)
    t = time.monotonic()
    r = bench(a.binary, b, "--topic", "big", "--partitions", str(a.big_partitions),
              "--messages", str(records), "--consumers", "0", "--warmup-secs", "0",
              "--duration-secs", "3600")
    wrote = time.monotonic() - t
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(b.data_dir) for f in fs)
    emit(phase="big-write", gb=round(size / 1e9, 2), partitions=a.big_partitions,
         seconds=round(wrote, 1), produce_mb_s=round(r["produce_mb_per_s"], 1))
    restart = emit(phase="big-restart", gb=round(size / 1e9, 2), partitions=a.big_partitions,
                   **restart_times(b, 1, "big"))
    b.stop()
    return {"gb": round(size / 1e9, 2), "restart": restart}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-gb", type=float, default=0)
    ap.add_argument("--big-partitions", type=int, default=200)
    ap.add_argument("--skip-scale", action="store_true")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="strom-scale-")
    try:
        summary = {}
        if not a.skip_scale:
            summary["scale"] = scale_phase(a, root)
        if a.big_gb > 0:
            summary["big"] = big_phase(a, root)
        print("# summary " + json.dumps(summary))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
