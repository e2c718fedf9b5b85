"""Debian's kcat (librdkafka 2.0.2, which checks the advertised Produce/Fetch minimums) against
`strom serve` (issue 3): metadata, produce and consume with every codec, keys, headers, and
binary values that must come back byte for byte. The stored batches are fetched raw to prove
the codec really reached the log (old librdkafka silently falls back to no compression)."""

import json
import os
import random
import shutil
import subprocess
import time

import pytest

import kwire

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (scripts/setup)")]

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def kcat(broker, *args, stdin=None, timeout=60):
    cmd = ["kcat", "-b", broker.bootstrap, "-X", "socket.timeout.ms=10000", *args]
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode(errors='replace')}"
    return p.stdout


def create(broker, topic, partitions=1):
    with kwire.Conn(broker.bootstrap) as c:
        assert c.create_topic(topic, partitions) == kwire.NONE


def consume_json(broker, topic, *extra):
    out = kcat(broker, "-C", "-t", topic, "-e", "-o", "beginning", "-J", *extra)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_metadata_listing(broker):
    create(broker, "kcat-meta", 3)
    md = json.loads(kcat(broker, "-L", "-J"))
    assert len(md["brokers"]) == 1
    (b,) = md["brokers"]
    assert b["name"].endswith(f":{broker.port}"), b
    topics = {t["topic"]: t for t in md["topics"]}
    assert "kcat-meta" in topics
    parts = topics["kcat-meta"]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2]
    assert all(p["leader"] == b["id"] for p in parts)
    one = json.loads(kcat(broker, "-L", "-J", "-t", "kcat-meta"))
    assert [t["topic"] for t in one["topics"]] == ["kcat-meta"]


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_produce_consume_with_codec_keys_headers(broker, codec, tmp_path):
    topic = f"kcat-{codec}"
    create(broker, topic)
    rng = random.Random(codec)
    n = 1000
    lines = [f"key-{i % 7}:value-{i}-{'abc' * rng.randint(0, 50)}" for i in range(n)]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-z", codec, "-K", ":", "-H", "trace=abc",
         "-H", "dup=1", "-H", "dup=2", stdin=("\n".join(lines) + "\n").encode())

    # Binary values (NULs, newlines, every byte), one file = one message.
    blobs = [bytes(range(256)) * 4,
             bytes(rng.getrandbits(8) for _ in range(50_000)),
             b"\n\x00\n" * 10_000]
    files = []
    for i, blob in enumerate(blobs):
        f = tmp_path / f"blob{i}"
        f.write_bytes(blob)
        files.append(str(f))
    kcat(broker, "-P", "-t", topic, "-p", "0", "-z", codec, *files)

    msgs = consume_json(broker, topic, "-c", str(n))  # the text messages (JSON needs UTF-8)
    assert len(msgs) == n
    now_ms = int(time.time() * 1000)
    assert all(m["tstype"] == "create" and abs(m["ts"] - now_ms) < 120_000 for m in msgs)
    for i, m in enumerate(msgs[:n]):
        key, value = lines[i].split(":", 1)
        assert (m["partition"], m["offset"]) == (0, i)
        assert m["key"] == key and m["payload"] == value
        assert m["headers"] == ["trace", "abc", "dup", "1", "dup", "2"]
    assert [m["offset"] for m in msgs] == list(range(n))

    # Byte-identical values: `%S` is the value's length, then the raw value.
    raw = kcat(broker, "-C", "-t", topic, "-e", "-o", str(n), "-f", "%o %S\n%s")
    got, pos = [], 0
    while pos < len(raw):
        nl = raw.index(b"\n", pos)
        offset, size = map(int, raw[pos:nl].split())
        got.append((offset, raw[nl + 1:nl + 1 + size]))
        pos = nl + 1 + size
    assert got == [(n + i, blob) for i, blob in enumerate(blobs)]

    # The log holds the batches as kcat compressed them.
    batches = kwire.fetch_all(broker.bootstrap, topic, 0)
    assert batches and all(b["crc_ok"] for b in batches)
    assert {b["compression"] for b in batches} == {CODECS[codec]}, \
        "the stored batches are not compressed with the codec kcat was asked for"
    assert sum(b["last_offset_delta"] + 1 for b in batches) == n + len(blobs)


def test_offsets_and_partitions(broker):
    create(broker, "kcat-parts", 4)
    for p in range(4):
        data = "".join(f"p{p}-m{i}\n" for i in range(10)).encode()
        kcat(broker, "-P", "-t", "kcat-parts", "-p", str(p), stdin=data)
    msgs = consume_json(broker, "kcat-parts")
    assert len(msgs) == 40
    for p in range(4):
        mine = [m for m in msgs if m["partition"] == p]
        assert [m["payload"] for m in mine] == [f"p{p}-m{i}" for i in range(10)]
        assert [m["offset"] for m in mine] == list(range(10))
    # An absolute start offset and a count, on one partition.
    some = consume_json(broker, "kcat-parts", "-p", "2", "-o", "5", "-c", "3")
    assert [(m["offset"], m["payload"]) for m in some] == [(5, "p2-m5"), (6, "p2-m6"), (7, "p2-m7")]
    # The last two from the end.
    tail = consume_json(broker, "kcat-parts", "-p", "1", "-o", "-2")
    assert [m["payload"] for m in tail] == ["p1-m8", "p1-m9"]


def test_produce_to_auto_created_topic(broker):
    kcat(broker, "-P", "-t", "kcat-auto", stdin=b"one\ntwo\n")
    md = json.loads(kcat(broker, "-L", "-J", "-t", "kcat-auto"))
    assert [len(t["partitions"]) for t in md["topics"]] == [1], "num.partitions defaults to 1"
    msgs = consume_json(broker, "kcat-auto")
    assert [m["payload"] for m in msgs] == ["one", "two"]


def test_tombstone_and_empty_values(broker):
    create(broker, "kcat-null")
    # -Z: an empty value is sent as NULL (a tombstone); keys stay.
    kcat(broker, "-P", "-t", "kcat-null", "-p", "0", "-K", ":", "-Z", stdin=b"k1:\nk2:v2\n")
    msgs = consume_json(broker, "kcat-null")
    assert [(m["key"], m["payload"]) for m in msgs] == [("k1", None), ("k2", "v2")]


def test_consuming_twice_gives_the_same_answer(broker):
    """Consuming twice gives the same answer (a fetch never changes the log)."""
    create(broker, "kcat-twice")
    kcat(broker, "-P", "-t", "kcat-twice", "-p", "0", "-z", "zstd",
         stdin=os.urandom(1000).hex().encode() + b"\n")
    first = consume_json(broker, "kcat-twice")
    second = consume_json(broker, "kcat-twice")
    assert len(first) == 1 and first == second


def test_balanced_consumer_group(broker_factory):
    """kcat -G: librdkafka's balanced consumer joins a group, consumes, commits."""
    broker = broker_factory(group_initial_rebalance_delay_ms=0)
    create(broker, "kcat-group", 3)
    kcat(broker, "-P", "-t", "kcat-group", "-K:", stdin=b"".join(f"k{i}:v{i}\n".encode() for i in range(30)))
    out = kcat(broker, "-G", "kcat-g", "-o", "beginning", "-c", "30", "-f", "%s\n", "kcat-group", timeout=90)
    assert sorted(out.decode().split()) == sorted(f"v{i}" for i in range(30))
    # The group committed: a second run from the committed offsets finds nothing new.
    kcat(broker, "-P", "-t", "kcat-group", "-K:", stdin=b"k0:late\n")
    again = kcat(broker, "-G", "kcat-g", "-c", "1", "-f", "%s\n", "kcat-group", timeout=90)
    assert again.decode().split() == ["late"]
