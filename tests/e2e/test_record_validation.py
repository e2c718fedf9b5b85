"""What is stored is validated as Kafka does (issue 22): CRC-valid batches whose records do
not hold together are refused with their error code and nothing of them is stored; readers
(HTTP fetch, SSE, `strom consume`) skip a bad batch that is already on disk, naming its
offset, and go on.

Batches are hand-encoded (`kwire`): no client library writes a key length of 2^31-1.
Compressed cases use gzip (Python's stdlib); real clients' valid batches of every codec are
covered by test_kcat.py, test_confluent.py and test_kafka_python.py.
"""

import json
import os
import subprocess
import time
import zlib

import pytest
import requests

import kwire
from conftest import strom_bin
from kwire import Conn

pytestmark = pytest.mark.timeout(180)

I32_MAX = 2**31 - 1


def rec(index, *, key=None, value=b"v", headers=()):
    return kwire.record(index, value, key=key, headers=headers)


def two_good():
    return kwire.record_batch([b"good-0", b"good-1"])


def noise(n, seed=7):
    """Deterministic bytes that are no codec's format."""
    out, x = bytearray(), seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append((x >> 16) & 0xFF)
    return bytes(out)


def zip_bomb():
    """A gzip batch whose one record's value is 65 MiB of zeros (about 64 KiB compressed):
    above the decompressed bound, 64 x max(batch, 1 MiB) = 64 MiB."""
    n = 65 << 20
    head = kwire.varint(0) + kwire.varint(0) + kwire.varint(-1) + kwire.varint(n)
    body_len = 1 + len(head) + n + 1
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # a gzip wrapper
    out = z.compress(kwire.varint(body_len) + b"\x00" + head)
    zeros = bytes(1 << 20)
    for _ in range(n >> 20):
        out += z.compress(zeros)
    out += z.compress(kwire.varint(0)) + z.flush()
    return kwire.batch_of(out, 1, attributes=kwire.GZIP)


# (name, batch, expected error code): the invalid batches of the issue, and more.
BAD = [
    ("lz4-flag-not-lz4", kwire.batch_of(rec(0) + rec(1), 2, attributes=kwire.LZ4),
     kwire.CORRUPT_MESSAGE),
    ("gzip-of-garbage", kwire.batch_of(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + noise(400), 1,
                                       attributes=kwire.GZIP), kwire.CORRUPT_MESSAGE),
    ("unknown-codec-5", kwire.batch_of(rec(0), 1, attributes=5), kwire.CORRUPT_MESSAGE),
    ("key-length-2^31-1", kwire.batch_of(
        kwire.raw_record(b"\x00", 0, 0, I32_MAX, b"k", -1, 0), 1), kwire.INVALID_RECORD),
    ("header-count-2^31-1", kwire.batch_of(
        kwire.raw_record(b"\x00", 0, 0, -1, -1, I32_MAX), 1), kwire.INVALID_RECORD),
    ("claims-2^31-1-records", kwire.batch_of(rec(0), I32_MAX), kwire.INVALID_RECORD),
    ("claims-2^31-1-records-gzip", kwire.gzip_batch(rec(0), I32_MAX), kwire.INVALID_RECORD),
    ("key-length-2^31-1-gzip", kwire.gzip_batch(
        kwire.raw_record(b"\x00", 0, 0, I32_MAX, b"k", -1, 0), 1), kwire.INVALID_RECORD),
    ("control-batch", kwire.batch_of(rec(0), 1, attributes=kwire.CONTROL), kwire.INVALID_RECORD),
    ("null-header-key", kwire.batch_of(
        kwire.raw_record(b"\x00", 0, 0, -1, -1, 1, -1, -1), 1), kwire.INVALID_RECORD),
    ("offset-delta-not-index", kwire.batch_of(rec(0) + rec(7), 2), kwire.INVALID_RECORD),
    ("bytes-after-records", kwire.batch_of(rec(0) + b"\x00\x00", 1), kwire.INVALID_RECORD),
    ("six-byte-varint", kwire.batch_of(
        kwire.raw_record(b"\x00", 0, b"\x80\x80\x80\x80\x80\x00", -1, -1, 0), 1),
     kwire.INVALID_RECORD),
]


@pytest.mark.parametrize("name,batch,code", BAD, ids=[b[0] for b in BAD])
def test_invalid_batch_is_refused_and_nothing_is_stored(broker, name, batch, code):
    topic = "v-" + name.replace("^", "").replace("_", "-")
    with Conn(broker.bootstrap) as c:
        assert c.create_topic(topic) == kwire.NONE
        assert c.produce(topic, 0, two_good()) == (kwire.NONE, 0)
        err, _ = c.produce(topic, 0, batch)
        assert err == code, f"{name}: error {err}, expected {code}"
        # The high watermark did not move, and the same connection goes on.
        assert c.fetch(topic, 0, 0)[1] == 2
        assert c.produce(topic, 0, kwire.record_batch([b"good-2"])) == (kwire.NONE, 2)
    batches = kwire.fetch_all(broker.bootstrap, topic, 0)
    values = [v for b in batches for v in kwire.uncompressed_values(b)]
    assert values == [b"good-0", b"good-1", b"good-2"]


def test_zip_bomb_is_message_too_large(broker):
    bomb = zip_bomb()
    assert len(bomb) < 1 << 20, "the bomb fits max.message.bytes"
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("bomb") == kwire.NONE
        assert c.produce("bomb", 0, two_good()) == (kwire.NONE, 0)
        p = c.produce_partition("bomb", 0, bomb, version=8)
        assert p["error_code"] == kwire.MESSAGE_TOO_LARGE
        assert "67108864" in p["error_message"], p["error_message"]
        assert c.fetch("bomb", 0, 0)[1] == 2
    assert "memory allocation" not in broker.log


def test_valid_gzip_batch_with_headers_is_stored(broker):
    records = rec(0, key=b"k", headers=[("h", b"1"), ("h", None)]) + rec(1, value=None)
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("gz-ok") == kwire.NONE
        assert c.produce("gz-ok", 0, kwire.gzip_batch(records, 2)) == (kwire.NONE, 0)
        assert c.fetch("gz-ok", 0, 0)[1] == 2


def test_produce_v8_names_the_record_at_fault(broker):
    """KIP-467: record_errors carries the index of the bad record within its batch."""
    bad = kwire.batch_of(rec(0) + rec(1) + kwire.raw_record(b"\x00", 0, 2, -1, -1, 1, -1, -1), 3)
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("kip467") == kwire.NONE
        p = c.produce_partition("kip467", 0, bad, version=8)
        assert p["error_code"] == kwire.INVALID_RECORD
        assert len(p["record_errors"]) == 1
        index, message = p["record_errors"][0]
        assert index == 2
        assert "null" in message or "header key length -1" in message, message
        assert p["error_message"] and "record 2" in p["error_message"]
        # Errors of the whole batch have no record error.
        p = c.produce_partition("kip467", 0, kwire.batch_of(rec(0), 5), version=8)
        assert p["error_code"] == kwire.INVALID_RECORD and p["record_errors"] == []
        assert c.fetch("kip467", 0, 0)[1] == 0


# --- readers over a bad batch already on disk ----------------------------------------------


@pytest.fixture
def http_broker(broker_factory):
    return broker_factory(http=True)


def cli():
    """The CLI: STROM_CLI, else the broker's own binary (it has the client commands too)."""
    return os.environ.get("STROM_CLI") or strom_bin()


def sse_events(b, topic, want, timeout=20):
    """The first `want` SSE events (kind, data) of `topic` from the earliest offset."""
    events, kind = [], None
    with requests.get(f"{b.http}/topics/{topic}/events", params={"from": "earliest"},
                      stream=True, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith(b"event:"):
                kind = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                events.append((kind, json.loads(line[5:])))
                if len(events) == want:
                    return events
    return events


def test_readers_skip_a_bad_stored_batch_naming_its_offset(http_broker):
    """A CRC-valid batch with bad contents at the tail of a segment (recovery checks headers
    and CRCs only, so it stays): HTTP fetch, SSE and `strom consume` name its offset, skip
    it and serve the records after it; the broker keeps serving."""
    b, topic = http_broker, "stored-bad"
    with Conn(b.bootstrap) as c:
        assert c.create_topic(topic) == kwire.NONE
        assert c.produce(topic, 0, two_good()) == (kwire.NONE, 0)
    b.stop()
    segment = b.data_dir / f"{topic}-0" / "00000000000000000000.log"
    bad_framing = kwire.batch_of(kwire.raw_record(b"\x00", 0, 0, I32_MAX, b"k", -1, 0), 1,
                                 base_offset=2)
    bad_lz4 = kwire.batch_of(rec(0), 1, attributes=kwire.LZ4, base_offset=3)
    with open(segment, "ab") as f:
        f.write(bad_framing + bad_lz4)
    b.start()
    with Conn(b.bootstrap) as c:
        assert c.fetch(topic, 0, 0)[1] == 4, "recovery kept the CRC-valid batches"
        assert c.produce(topic, 0, kwire.record_batch([b"good-4", b"good-5"])) == (kwire.NONE, 4)

    r = requests.get(f"{b.http}/topics/{topic}/partitions/0/records", params={"offset": 0}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["offset"] for x in body["records"]] == [0, 1, 4, 5]
    assert [x["value"] for x in body["records"]] == ["good-0", "good-1", "good-4", "good-5"]
    assert [e["offset"] for e in body["errors"]] == [2, 3]
    assert "record 0" in body["errors"][0]["message"] and "lz4" in body["errors"][1]["message"]
    assert body["next_offset"] == 6
    # From the bad batch itself: the error, then what follows.
    body = requests.get(f"{b.http}/topics/{topic}/partitions/0/records", params={"offset": 3},
                        timeout=10).json()
    assert [e["offset"] for e in body["errors"]] == [3]
    assert [x["offset"] for x in body["records"]] == [4, 5] and body["next_offset"] == 6
    # Only the bad batches: next_offset moves past them.
    body = requests.get(f"{b.http}/topics/{topic}/partitions/0/records",
                        params={"offset": 2, "max_bytes": 1}, timeout=10).json()
    assert body["records"] == [] and [e["offset"] for e in body["errors"]] == [2]
    assert body["next_offset"] == 3

    events = sse_events(b, topic, 6)
    assert [k for k, _ in events] == ["record", "record", "error", "error", "record", "record"]
    assert [d["offset"] for k, d in events if k == "error"] == [2, 3]
    assert [d["record"]["value"] for k, d in events if k == "record"] == \
        ["good-0", "good-1", "good-4", "good-5"]

    p = subprocess.run([cli(), "consume", topic, "--from-beginning", "--count", "4"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, STROM_BOOTSTRAP=b.bootstrap))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["good-0", "good-1", "good-4", "good-5"]
    warnings = [line for line in p.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, p.stderr
    assert "offset 2" in warnings[0] and "offset 3" in warnings[1]

    # The broker keeps serving both doors.
    with Conn(b.bootstrap) as c:
        assert c.produce(topic, 0, kwire.record_batch([b"good-6"])) == (kwire.NONE, 6)
    assert requests.get(f"{b.http}/healthz", timeout=5).status_code == 200
    assert "panicked" not in b.log and "memory allocation" not in b.log
