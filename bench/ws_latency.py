#!/usr/bin/env python3
"""WebSocket push latency of the HTTP door: N subscribers on one topic, a producer POSTs one
record every `--interval-ms` carrying its send time; each subscriber records receive − send.

    .venv/bin/python bench/ws_latency.py --http http://127.0.0.1:8080 --subscribers 1000
"""

import argparse
import asyncio
import json
import statistics
import time
import uuid

import requests
import websockets


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", default="http://127.0.0.1:8080")
    ap.add_argument("--subscribers", type=int, default=1)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--interval-ms", type=float, default=10)
    a = ap.parse_args()
    topic = f"wsl-{uuid.uuid4().hex[:8]}"
    requests.post(f"{a.http}/topics", json={"name": topic, "partitions": 1}).raise_for_status()
    ws_url = "ws://" + a.http.split("://", 1)[1] + "/ws"
    latencies = []
    done = asyncio.Event()
    ready = 0

    async def subscriber():
        nonlocal ready
        async with websockets.connect(ws_url, max_queue=None) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topics": [topic], "from": "latest"}))
            await ws.recv()
            ready += 1
            got = 0
            while got < a.messages:
                m = json.loads(await ws.recv())
                if m.get("type") == "record":
                    latencies.append(time.time() - float(m["value"]))
                    got += 1

    subs = [asyncio.create_task(subscriber()) for _ in range(a.subscribers)]
    while ready < a.subscribers:
        await asyncio.sleep(0.05)
    session = requests.Session()
    loop = asyncio.get_running_loop()
    for _ in range(a.messages):
        body = {"records": [{"value": repr(time.time())}]}
        await loop.run_in_executor(None, lambda: session.post(f"{a.http}/topics/{topic}/records", json=body))
        await asyncio.sleep(a.interval_ms / 1000)
    await asyncio.wait_for(asyncio.gather(*subs), 120)
    lat = sorted(x * 1000 for x in latencies)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(json.dumps({"subscribers": a.subscribers, "messages": a.messages, "received": len(lat),
                      "p50_ms": round(q(0.50), 3), "p99_ms": round(q(0.99), 3), "max_ms": round(lat[-1], 3),
                      "mean_ms": round(statistics.mean(lat), 3)}))


asyncio.run(main())
