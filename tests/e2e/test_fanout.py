"""Fan-out at chat scale (issue 15): many WebSocket subscribers of one topic from `latest`
share one follower in the broker (`strom_http_ws_tails`), each gets every record exactly once
and in order, one joining mid-stream misses nothing, a slow one is closed with 1013 without
slowing the others, idle ones hold little memory, and a frame larger than the 1 KiB read buffer
still arrives whole. Clients: `websockets` (asyncio) for the subscribers, confluent-kafka and
`requests` for the producers."""

import asyncio
import json
import re
import resource
import socket
import subprocess
import threading
import time

import pytest
import requests
from confluent_kafka import Producer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _enough_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def http_broker(broker_factory):
    return broker_factory(http=True)


def create(b, name, partitions=1):
    r = requests.post(f"{b.http}/topics", json={"name": name, "partitions": partitions})
    assert r.status_code == 201, r.text


def metric(b, name):
    text = requests.get(f"{b.http}/metrics", timeout=10).text
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def wait_metric(b, name, want, timeout=10):
    deadline = time.monotonic() + timeout
    while (got := metric(b, name)) != want:
        assert time.monotonic() < deadline, f"{name} is {got}, not {want}"
        time.sleep(0.1)


def end_offsets(b, topic):
    return [p["log_end_offset"] for p in requests.get(f"{b.http}/topics/{topic}").json()["partitions"]]


async def subscriber(b, topic, frm="latest"):
    ws = await connect(f"ws://127.0.0.1:{b.http_port}/ws", open_timeout=30, max_size=None)
    await ws.send(json.dumps({"op": "subscribe", "topics": [topic], "from": frm}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert reply["type"] == "subscribed", reply
    return ws


async def receive(ws, n, timeout=60):
    out = []
    while len(out) < n:
        m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        assert m["type"] == "record", m
        out.append(m)
    return out


async def open_many(b, topic, n, batch=100):
    sockets = []
    for i in range(0, n, batch):
        sockets += await asyncio.gather(*(subscriber(b, topic) for _ in range(min(batch, n - i))))
    return sockets


def kafka_produce(b, topic, values):
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, v.encode(), key=f"k{i}".encode())
    assert p.flush(30) == 0


def test_every_subscriber_from_latest_gets_every_record_once_in_order(http_broker):
    b = http_broker
    create(b, "room", 2)
    kafka_produce(b, "room", [f"before-{i}" for i in range(5)])  # not pushed: from latest

    async def scenario():
        subs = await open_many(b, "room", 600)
        assert metric(b, "strom_http_ws_tails") == 1, "600 subscribers of one topic share one follower"
        # Presence: the topic's subscriber count, in the REST API and the metrics.
        assert requests.get(f"{b.http}/topics/room").json()["subscribers"] == 600
        assert metric(b, 'strom_http_topic_subscribers{topic="room"}') == 600
        values = [f"m-{i}" for i in range(30)]
        await asyncio.to_thread(kafka_produce, b, "room", values)
        got = await asyncio.gather(*(receive(ws, 30) for ws in subs))
        ends = end_offsets(b, "room")
        for msgs in got:
            assert sorted(m["value"] for m in msgs) == sorted(values)
            for p in (0, 1):
                offsets = [m["offset"] for m in msgs if m["partition"] == p]
                first = ends[p] - len(offsets)
                assert offsets == list(range(first, ends[p])), (p, offsets, ends)
        # Half leave; the rest still get everything, and the leavers are dropped.
        for ws in subs[:300]:
            await ws.close()
        await asyncio.to_thread(kafka_produce, b, "room", [f"n-{i}" for i in range(10)])
        got = await asyncio.gather(*(receive(ws, 10) for ws in subs[300:]))
        assert all(sorted(m["value"] for m in msgs) == sorted(f"n-{i}" for i in range(10)) for msgs in got)
        for ws in subs[300:]:
            await ws.close()

    asyncio.run(scenario())
    wait_metric(b, "strom_http_ws_tails", 0)
    wait_metric(b, 'strom_http_open_connections{kind="websocket"}', 0)
    assert requests.get(f"{b.http}/topics/room").json()["subscribers"] == 0


def test_subscribers_joining_mid_stream_miss_nothing(http_broker):
    b = http_broker
    create(b, "stream", 1)
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
        i = 0
        while not stop.is_set():
            p.produce("stream", f"v{i}".encode())
            p.poll(0)
            i += 1
            time.sleep(0.002)
        assert p.flush(30) == 0

    t = threading.Thread(target=produce)
    t.start()

    async def scenario():
        joined = []
        for _ in range(20):
            ws = await subscriber(b, "stream")
            # The subscriber's start is at or before this end: its first record is too.
            joined.append((ws, end_offsets(b, "stream")[0]))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.to_thread(t.join)
        end = end_offsets(b, "stream")[0]
        for ws, seen_end in joined:
            msgs = []
            while not msgs or msgs[-1]["offset"] < end - 1:
                m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                msgs.append(m)
            offsets = [m["offset"] for m in msgs]
            assert offsets[0] <= seen_end
            assert offsets == list(range(offsets[0], end)), "a gap or a duplicate"
            assert [m["value"] for m in msgs] == [f"v{o}" for o in offsets]
            await ws.close()

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        t.join()


def test_slow_subscriber_is_closed_with_1013_and_the_others_get_everything(broker_factory):
    b = broker_factory("--http-connection-buffer-bytes", str(2 << 20), http=True)
    create(b, "burst", 1)
    big = "x" * 20000
    rounds, per_round = 24, 20  # 9.6 MB in all, 400 KB per round

    async def scenario():
        fast = [await subscriber(b, "burst") for _ in range(3)]
        # The slow one never reads until the end, with a small receive buffer (no autotuning),
        # so what the kernel absorbs is bounded by the broker's send buffer (tcp_wmem max).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", b.http_port))
        slow = await connect(f"ws://127.0.0.1:{b.http_port}/ws", sock=sock, open_timeout=30, max_size=None)
        await slow.send(json.dumps({"op": "subscribe", "topics": ["burst"], "from": "latest"}))
        assert json.loads(await asyncio.wait_for(slow.recv(), 30))["type"] == "subscribed"

        async def produce():
            for _ in range(rounds):
                r = await asyncio.to_thread(requests.post, f"{b.http}/topics/burst/records",
                                            json={"records": [{"value": big}] * per_round})
                assert r.status_code == 200, r.text
                await asyncio.sleep(0.1)

        got, *_ = await asyncio.gather(
            asyncio.gather(*(receive(ws, rounds * per_round) for ws in fast)), produce())
        for msgs in got:
            assert [m["offset"] for m in msgs] == list(range(rounds * per_round))
        # The slow one was closed as too slow once its queue was full.
        with pytest.raises(ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(slow.recv(), 30)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1013, e.value

    asyncio.run(scenario())
    assert requests.get(f"{b.http}/healthz").status_code == 200


def broker_rss_kb(b):
    with open(f"/proc/{b.proc.pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def test_idle_subscribers_hold_a_few_kilobytes_each(http_broker):
    b = http_broker
    create(b, "idle", 1)
    n = 2000

    async def scenario():
        warm = await open_many(b, "idle", 100)  # the tail, runtime and allocator warmed up
        await asyncio.sleep(0.5)
        before = broker_rss_kb(b)
        subs = await open_many(b, "idle", n)
        await asyncio.sleep(1)
        per = (broker_rss_kb(b) - before) * 1024 / n
        # A record still reaches every one of them.
        await asyncio.to_thread(kafka_produce, b, "idle", ["hello"])
        got = await asyncio.gather(*(receive(ws, 1) for ws in subs + warm))
        assert all(m[0]["value"] == "hello" for m in got)
        for ws in subs + warm:
            await ws.close()
        return per

    per = asyncio.run(scenario())
    print(f"broker RSS per idle WebSocket subscriber: {per / 1024:.1f} KiB")
    # tungstenite's defaults (128 KiB read buffer, 128 KiB write buffer) gave ~143 KB each; ~6 KB now.
    assert per < 16 * 1024, f"{per / 1024:.1f} KiB per idle subscriber"


def test_a_frame_larger_than_the_read_buffer_arrives_whole(http_broker):
    b = http_broker
    create(b, "bigframe", 1)
    value = "y" * 900_000

    async def scenario():
        ws = await connect(f"ws://127.0.0.1:{b.http_port}/ws", open_timeout=30, max_size=None)
        await ws.send(json.dumps({"op": "produce", "topic": "bigframe", "records": [{"value": value}]}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert reply["type"] == "produced", reply
        await ws.close()
        return reply["offsets"][0]["offset"]

    offset = asyncio.run(scenario())
    rec = requests.get(f"{b.http}/topics/bigframe/partitions/0/records", params={"offset": offset}).json()
    assert rec["records"][0]["value"] == value


async def sse_open(b, topic, last_event_id=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", b.http_port)
    head = f"GET /topics/{topic}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
    if last_event_id:
        head += f"Last-Event-ID: {last_event_id}\r\n"
    writer.write((head + "\r\n").encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 30)
    assert b" 200 " in status, status
    return reader, writer


async def sse_events(reader, n, timeout=60):
    """The next n `record` events as (id, data); the chunked framing's lines are skipped."""
    out, ev = [], {}
    while len(out) < n:
        line = (await asyncio.wait_for(reader.readline(), timeout)).decode().rstrip("\r\n")
        if line.startswith("event:"):
            ev["event"] = line[6:].strip()
        elif line.startswith("id:"):
            ev["id"] = line[3:].strip()
        elif line.startswith("data:"):
            ev["data"] = json.loads(line[5:].strip())
        elif line == "" and "data" in ev:
            assert ev.get("event") == "record", ev
            out.append((ev["id"], ev["data"]))
            ev = {}
    return out


def test_sse_streams_from_latest_share_one_tail_and_resume_exactly(http_broker):
    b = http_broker
    create(b, "feed", 2)

    async def scenario():
        streams = [await sse_open(b, "feed") for _ in range(200)]
        wait_metric(b, "strom_http_ws_tails", 1)  # one tail for the 200 SSE streams
        assert requests.get(f"{b.http}/topics/feed").json()["subscribers"] == 200
        await asyncio.to_thread(kafka_produce, b, "feed", [f"e-{i}" for i in range(20)])
        got = await asyncio.gather(*(sse_events(r, 20) for r, _ in streams))
        ends = end_offsets(b, "feed")
        final_id = ",".join(f"{p}:{o}" for p, o in enumerate(ends))
        for events in got:
            assert sorted(d["record"]["value"] for _, d in events) == sorted(f"e-{i}" for i in range(20))
            assert events[-1][0] == final_id, (events[-1][0], final_id)
        # A stream resumed from the 10th event's id gets exactly the 10 after it.
        mid_id = got[0][9][0]
        reader, writer = await sse_open(b, "feed", last_event_id=mid_id)
        rest = await sse_events(reader, 10)
        assert sorted(d["record"]["value"] for _, d in rest) == sorted(d["record"]["value"] for _, d in got[0][10:])
        writer.close()
        for _, w in streams:
            w.close()

    asyncio.run(scenario())
    wait_metric(b, "strom_http_ws_tails", 0)
    wait_metric(b, 'strom_http_open_connections{kind="sse"}', 0)


@pytest.mark.parametrize("frm", ["latest", "earliest"])  # a shared tail; a follower of its own
def test_skip_to_latest_policy_tells_a_slow_subscriber_what_it_missed(broker_factory, frm):
    b = broker_factory("--http-connection-buffer-bytes", str(2 << 20), "--ws-slow-policy", "skip-to-latest",
                       http=True)
    create(b, "skippy", 1)
    big = "x" * 20000
    rounds, per_round = 24, 20

    async def scenario():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", b.http_port))
        slow = await connect(f"ws://127.0.0.1:{b.http_port}/ws", sock=sock, open_timeout=30, max_size=None)
        await slow.send(json.dumps({"op": "subscribe", "topics": ["skippy"], "from": frm}))
        assert json.loads(await asyncio.wait_for(slow.recv(), 30))["type"] == "subscribed"
        for _ in range(rounds):
            r = await asyncio.to_thread(requests.post, f"{b.http}/topics/skippy/records",
                                        json={"records": [{"value": big}] * per_round})
            assert r.status_code == 200, r.text
        total = rounds * per_round
        # Now it reads; one more record after the burst carries the notice before it.
        got, skipped = [], []
        produced_last = False
        while not got or got[-1] < total:
            try:
                m = json.loads(await asyncio.wait_for(slow.recv(), 2))
            except asyncio.TimeoutError:
                assert not produced_last, "nothing after the last record"
                r = await asyncio.to_thread(requests.post, f"{b.http}/topics/skippy/records",
                                            json={"records": [{"value": "last"}]})
                assert r.json()["offsets"][0]["offset"] == total
                produced_last = True
                continue
            if m["type"] == "record":
                got.append(m["offset"])
            else:
                assert m["type"] == "skipped", m
                skipped += [(x["from"], x["to"]) for x in m["ranges"]]
        assert skipped, "the burst overflowed the queue: something was skipped"
        covered = sorted(got + [o for a, z in skipped for o in range(a, z)])
        assert covered == list(range(total + 1)), "every offset delivered or reported skipped, once"
        await slow.close()

    asyncio.run(scenario())
    assert requests.get(f"{b.http}/healthz").status_code == 200


def test_bad_slow_policy_is_refused_at_start(broker_factory):
    b = broker_factory("--ws-slow-policy", "drop-everything", http=True, start=False)
    r = subprocess.run(b.command(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--ws-slow-policy must be close or skip-to-latest" in r.stderr + r.stdout


def test_pings_keep_live_clients_and_close_silent_ones(broker_factory):
    b = broker_factory("--ws-ping-interval-ms", "200", http=True)
    create(b, "alive", 1)

    async def scenario():
        live = await subscriber(b, "alive")  # websockets answers pings by itself
        # A client that upgrades and then never reads or answers anything.
        raw = socket.create_connection(("127.0.0.1", b.http_port), timeout=10)
        raw.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b" 101 " in raw.recv(4096)
        # (Waits in a thread: the event loop must run for the live client to answer pings.)
        await asyncio.to_thread(wait_metric, b, 'strom_http_open_connections{kind="websocket"}', 2)
        # Two intervals of silence: the raw one is closed, the live one is not.
        await asyncio.to_thread(wait_metric, b, 'strom_http_open_connections{kind="websocket"}', 1, 10)

        def read_to_eof():
            data = b""
            while chunk := raw.recv(4096):
                data += chunk
            return data

        data = await asyncio.to_thread(read_to_eof)
        assert b"no pong" in data, data  # the close frame's reason, then EOF
        raw.close()
        await asyncio.sleep(1)
        await asyncio.to_thread(kafka_produce, b, "alive", ["still here"])
        assert (await receive(live, 1))[0]["value"] == "still here"
        await live.close()

    asyncio.run(scenario())
