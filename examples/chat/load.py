#!/usr/bin/env python3
"""Drives N simulated chat users against Strom's HTTP door and reports delivery latency.

Each user opens a WebSocket, subscribes to its room's topic (`chat.<room>`, users spread over
--rooms rooms) from `latest`, and once everyone is subscribed sends --messages messages, one
every --interval-ms, through the same socket. Every user times every message of its room from
the sender's clock to its own receipt (one machine, one clock). Prints the deliveries and the
latency percentiles (--json: one JSON line).

    python3 examples/chat/load.py --url http://127.0.0.1:8080 --users 1000 --rooms 10

Needs the `websockets` package (pip install websockets).
"""

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.error
import urllib.request

import websockets


def create_topic(url, name):
    req = urllib.request.Request(f"{url}/topics", data=json.dumps({"name": name, "partitions": 1}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # 409: the room exists already
            raise


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args):
    ws_url = args.url.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
    rooms = [f"chat.load-{i}" for i in range(args.rooms)]
    for r in rooms:
        create_topic(args.url, r)
    members = {r: 0 for r in rooms}
    latencies, sockets = [], []
    subscribed = 0
    all_subscribed = asyncio.Event()
    expected = 0
    done = asyncio.Event()

    async def user(i):
        nonlocal subscribed
        room = rooms[i % len(rooms)]
        members[room] += 1
        ws = await websockets.connect(ws_url, max_size=None, open_timeout=30)
        sockets.append(ws)
        await ws.send(json.dumps({"op": "subscribe", "topics": [room], "from": "latest", "format": "json"}))
        while json.loads(await ws.recv())["type"] != "subscribed":
            pass
        subscribed += 1
        if subscribed == args.users:
            all_subscribed.set()
        await all_subscribed.wait()

        async def receive():
            async for raw in ws:
                m = json.loads(raw)
                if m["type"] == "record":
                    latencies.append((time.time_ns() - m["value"]["sent_ns"]) / 1e6)
                    if len(latencies) >= expected:
                        done.set()

        reader = asyncio.create_task(receive())
        await asyncio.sleep(random.random() * args.interval_ms / 1000)
        for n in range(args.messages):
            await ws.send(json.dumps({"op": "produce", "topic": room, "value_format": "json", "records": [
                {"key": room, "value": {"user": f"user-{i}", "text": f"message {n}", "sent_ns": time.time_ns()}}]}))
            await asyncio.sleep(args.interval_ms / 1000)
        return reader

    # Connect in waves, so that a big run does not overflow the listen backlog.
    tasks = []
    for start in range(0, args.users, 200):
        tasks += [asyncio.create_task(user(i)) for i in range(start, min(start + 200, args.users))]
        await asyncio.sleep(0.05)
    expected = sum(n * n for n in members.values()) * args.messages
    started = time.monotonic()
    readers = await asyncio.gather(*tasks)
    try:
        await asyncio.wait_for(done.wait(), timeout=args.timeout)
    except asyncio.TimeoutError:
        pass
    took = time.monotonic() - started
    for r in readers:
        r.cancel()
    for ws in sockets:
        await ws.close()
    lat = sorted(latencies)
    result = {
        "users": args.users, "rooms": args.rooms, "sent": args.users * args.messages, "expected": expected,
        "delivered": len(lat), "seconds": round(took, 2),
        "latency_ms": {k: round(percentile(lat, q), 2) for k, q in
                       (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))} | {"max": round(lat[-1], 2) if lat else 0},
    }
    if args.json:
        print(json.dumps(result))
    else:
        ms = result["latency_ms"]
        print(f"{args.users} users in {args.rooms} rooms: {result['delivered']}/{expected} deliveries in {took:.1f} s; "
              f"latency p50 {ms['p50']} ms, p90 {ms['p90']} ms, p99 {ms['p99']} ms, max {ms['max']} ms")
    return 0 if len(lat) == expected else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="the HTTP door")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--messages", type=int, default=10, help="messages each user sends")
    ap.add_argument("--interval-ms", type=int, default=1000, help="between one user's messages")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for the deliveries")
    ap.add_argument("--json", action="store_true", help="one JSON line")
    sys.exit(asyncio.run(run(ap.parse_args())))


if __name__ == "__main__":
    main()
