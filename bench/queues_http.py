"""Share-group (queue) throughput over the HTTP door: records received and accepted per second
on a 1-partition topic by 1, 4 and 16 receivers (threads, one keep-alive session each), and the
redelivery latency (release -> the record received again, backoff 0).

    .venv/bin/python bench/queues_http.py [--bin target/release/strom] [--records 20000] [--batch 100]

Starts its own `strom serve` on free loopback ports over a temp dir; prints a Markdown table.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/strom")
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--receivers", default="1,4,16")
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="strom-qbench-")
    kport, hport = free_port(), free_port()
    http = f"http://127.0.0.1:{hport}"
    proc = subprocess.Popen([a.bin, "serve", "--data-dir", data, "--kafka-addr", f"127.0.0.1:{kport}",
                             "--http-addr", f"127.0.0.1:{hport}", "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{http}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "strom did not start"
            time.sleep(0.05)
        rows = []
        for n in [int(x) for x in a.receivers.split(",")]:
            topic, group = f"qb-{n}", f"qb-{n}"
            requests.post(f"{http}/topics", json={"name": topic, "partitions": 1}).raise_for_status()
            value = "x" * 100
            for i in range(0, a.records, 1000):
                recs = [{"value": value} for _ in range(min(1000, a.records - i))]
                requests.post(f"{http}/topics/{topic}/records", json={"records": recs}).raise_for_status()
            requests.post(f"{http}/queues/{group}/config",
                          json={"configs": {"share.auto.offset.reset": "earliest"}}).raise_for_status()
            done, lock = [0], threading.Lock()

            def worker():
                s = requests.Session()
                while True:
                    with lock:
                        if done[0] >= a.records:
                            return
                    r = s.post(f"{http}/queues/{group}/receive",
                               json={"topics": [topic], "max_records": a.batch, "wait_ms": 200})
                    recs = r.json()["records"]
                    if not recs:
                        continue
                    s.post(f"{http}/queues/{group}/ack",
                           json={"acks": [{"receipt": x["receipt"]} for x in recs]}).raise_for_status()
                    with lock:
                        done[0] += len(recs)

            t0 = time.monotonic()
            threads = [threading.Thread(target=worker) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            rows.append((n, a.records / elapsed))
        # Redelivery latency: release, then the next receive gets it again.
        requests.post(f"{http}/topics", json={"name": "qb-re", "partitions": 1}).raise_for_status()
        requests.post(f"{http}/queues/qb-re/config",
                      json={"configs": {"share.auto.offset.reset": "earliest",
                                        "share.delivery.count.limit": "10"}}).raise_for_status()
        s = requests.Session()
        lat = []
        for _ in range(50):
            requests.post(f"{http}/topics/qb-re/records", json={"records": [{"value": "r"}]}).raise_for_status()
            rec = s.post(f"{http}/queues/qb-re/receive", json={"topics": ["qb-re"], "wait_ms": 2000}).json()["records"][0]
            t0 = time.monotonic()
            s.post(f"{http}/queues/qb-re/ack", json={"acks": [{"receipt": rec["receipt"], "type": "release"}]}).raise_for_status()
            again = s.post(f"{http}/queues/qb-re/receive", json={"topics": ["qb-re"], "wait_ms": 2000}).json()["records"][0]
            lat.append(time.monotonic() - t0)
            s.post(f"{http}/queues/qb-re/ack", json={"acks": [{"receipt": again["receipt"]}]}).raise_for_status()
        print(f"| receivers | records accepted/s (1 partition, {a.records} x 100 B, batch {a.batch}) |")
        print("|---:|---:|")
        for n, rate in rows:
            print(f"| {n} | {rate:,.0f} |")
        print(f"\nredelivery (release -> received again, backoff 0): median {statistics.median(lat) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms over {len(lat)}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
