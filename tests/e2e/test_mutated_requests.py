"""Mutated real requests (issue 22): no request frame, however wrong, stops the broker.

The seeds are the request frames captured from real clients in `fuzz/corpus/kafka_request/`
(kcat, confluent-kafka, kafka-python, kafkajs, sarama; refreshed by `scripts/capture-corpus`).
A fixed-seed RNG mutates them (bit flips, byte replacements, truncation, random tails, huge
int32/int16 counts, 0xff varint runs, a random api version) and 20,000 mutated frames are sent
to a real `strom serve`, each framed with its true length except a small share that
deliberately lies about it. 32 connections run side by side, each with one frame in flight, so
that every frame reaches the broker and ends one of three ways: answered, refused (the broker
closes the connection; a new one is opened and counted) or held (no word within `HOLD_S`: the
connection is dropped). Afterwards the broker must still run, answer ApiVersions on a new
connection and carry a kcat produce/consume round trip, and no task may have panicked.

The frames of the issue itself (a huge array count that the decoder used to size an
allocation with, aborting the process) each get their own test.
"""

import random
import selectors
import shutil
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import kwire
from kwire import Conn

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "kafka_request"
SEED = 22
FRAMES = 20_000
# Wall-clock bound of the mutation run (the test's own timeout is above it).
RUN_BUDGET_S = 75.0
# Connections in parallel, each with one frame in flight, so that the requests the broker holds
# (a long fetch, a join waiting for its group) do not stall the run.
CONNECTIONS = 32
# A frame neither answered nor refused (connection closed) within this is taken as held by the
# broker: its connection is dropped and a new one takes the next frame.
HOLD_S = 0.5
# Share of frames whose length prefix lies (the rest are framed with their true length).
LYING_LENGTH_SHARE = 0.02
# Mutated frames above this size are cut (the broker's request limit is far above it).
FRAME_BYTES_MAX = 1 << 20

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (scripts/setup)"),
]

HUGE_INT32 = (0x7FFFFFFF, 0x7FFFFFFE, -2, 0x00FFFFFF, -1, 0x10000)
HUGE_INT16 = (0x7FFF, -2, -1)


def load_seeds():
    files = sorted(CORPUS.glob("*.bin"))
    assert len(files) >= 100, f"the seed corpus {CORPUS} has {len(files)} frames: run scripts/capture-corpus"
    seeds = [(f.name, f.read_bytes()) for f in files]
    apis = {struct.unpack_from(">h", data)[0] for _, data in seeds}
    assert len(apis) >= 15, f"the seed corpus covers only the api keys {sorted(apis)}"
    return seeds


# --- mutations --------------------------------------------------------------------------------
# Each takes (rng, frame bytearray) and mutates it in place (or returns a new one); positions
# below 8 (api key, version, correlation id) are left to `mutate_version`.

def _pos(rng, frame, width=1, start=8):
    if len(frame) < start + width:
        return None
    return rng.randrange(start, len(frame) - width + 1)


def flip_bits(rng, f):
    for _ in range(rng.randint(1, 4)):
        p = _pos(rng, f)
        if p is not None:
            f[p] ^= 1 << rng.randrange(8)
    return f


def replace_bytes(rng, f):
    for _ in range(rng.randint(1, 4)):
        p = _pos(rng, f)
        if p is not None:
            f[p] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return f


def truncate(rng, f):
    return f[:rng.randrange(8, max(len(f), 9))]


def extend(rng, f):
    return f + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))


def huge_int32(rng, f):
    p = _pos(rng, f, 4)
    if p is not None:
        f[p:p + 4] = struct.pack(">i", rng.choice(HUGE_INT32))
    return f


def huge_int16(rng, f):
    p = _pos(rng, f, 2)
    if p is not None:
        f[p:p + 2] = struct.pack(">h", rng.choice(HUGE_INT16))
    return f


def varint_run(rng, f):
    """0xff bytes (continuation bit set): an endless or oversized varint, or a huge compact count."""
    p = _pos(rng, f)
    if p is not None:
        n = rng.randint(1, 6)
        tail = rng.choice((b"", b"\x07", b"\x0f", b"\x7f"))
        f[p:p + n] = b"\xff" * n + tail
    return f


def delete_span(rng, f):
    p = _pos(rng, f)
    if p is not None:
        del f[p:p + rng.randint(1, 16)]
    return f


def duplicate_span(rng, f):
    p = _pos(rng, f)
    if p is not None:
        span = f[p:p + rng.randint(1, 32)]
        f[p:p] = span * rng.randint(1, 8)
    return f


def mutate_version(rng, f):
    """Another api version with the same body: a body read with the wrong version's schema."""
    f[2:4] = struct.pack(">h", rng.choice((-1, 0, 1, 2, 3, 4, 5, 7, 9, 12, 13, 17, 0x7FFF)))
    return f


MUTATIONS = (
    (flip_bits, 14), (replace_bytes, 14), (truncate, 10), (extend, 6), (huge_int32, 18),
    (huge_int16, 8), (varint_run, 10), (delete_span, 5), (duplicate_span, 4), (mutate_version, 6),
)
_MUTATORS = [m for m, _ in MUTATIONS]
_WEIGHTS = [w for _, w in MUTATIONS]


def mutated_frames(seeds, n, seed=SEED):
    """Yields (seed name, mutation names, framed bytes) for `n` mutated frames."""
    rng = random.Random(seed)
    for _ in range(n):
        name, data = rng.choice(seeds)
        f = bytearray(data)
        names = []
        for m in rng.choices(_MUTATORS, _WEIGHTS, k=rng.choice((1, 1, 1, 2, 2, 3))):
            f = bytearray(m(rng, f))
            names.append(m.__name__)
        f = bytes(f[:FRAME_BYTES_MAX])
        length = len(f)
        if rng.random() < LYING_LENGTH_SHARE:
            length = rng.choice((length - rng.randint(1, 8), length + rng.randint(1, 8), 0, -1, 4))
            names.append(f"length={length}")
        yield name, names, struct.pack(">i", length) + f


# --- the sender -------------------------------------------------------------------------------

class Link:
    """One connection with at most one frame in flight: it is answered, the broker closes the
    connection, or the broker holds it (a long fetch, a join waiting for its group, a frame
    whose length lies) past `HOLD_S`, and then the connection is dropped."""

    def __init__(self, bootstrap):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setblocking(False)
        self.inbox = bytearray()
        self.in_flight = None  # (description, deadline)

    def send(self, data, what) -> bool:
        """False when the broker closed the connection before taking the whole frame."""
        self.in_flight = (what, time.monotonic() + HOLD_S)
        self.inbox.clear()
        self.sock.settimeout(2)
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        finally:
            self.sock.setblocking(False)
        return True

    def read(self):
        """Whether the frame in flight is "answered", "closed" (the connection), or None yet."""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return "closed"
                self.inbox += chunk
        except BlockingIOError:
            pass
        except OSError:
            return "closed"
        if len(self.inbox) >= 4 and len(self.inbox) >= 4 + struct.unpack_from(">i", self.inbox)[0]:
            self.in_flight = None
            return "answered"
        return None

    def close(self):
        self.sock.close()


def last_words(broker, n=12):
    """The broker's last log lines, without backtrace frames, and every abort or panic line."""
    lines = [line for line in broker.log.splitlines()
             if line.strip() and not line.lstrip()[:1].isdigit() and not line.lstrip().startswith("at ")]
    fatal = [line for line in lines if "memory allocation" in line or "panicked" in line]
    return "\n".join(lines[-n:] + ["-- aborts and panics:"] + fatal[-10:])


def run_mutations(broker, seeds, n=FRAMES):
    """Sends `n` mutated frames over `CONNECTIONS` connections; returns what became of them."""
    stats = {"sent": 0, "answered": 0, "closed": 0, "held": 0, "connections": 0}
    links = {}
    sel = selectors.DefaultSelector()
    frames = mutated_frames(seeds, n)
    started = time.monotonic()

    def dead_report():
        lines = "\n".join(f"  {link.in_flight[0]}" for link in links.values() if link.in_flight)
        return (f"the broker died after {stats['sent']} mutated frames ({stats}, "
                f"exit {broker.proc.returncode}); frames in flight when it died:\n{lines}\n"
                f"what the broker said last:\n{last_words(broker)}")

    def died():
        """True when the process exits within a moment (an abort takes a little while)."""
        deadline = time.monotonic() + 2.0
        while broker.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def drop(i, outcome):
        """Closes connection i; `outcome` is what became of its frame in flight, if any."""
        link = links.pop(i)
        if link.in_flight:
            stats[outcome] += 1
        sel.unregister(link.sock)
        link.close()

    def connect(i):
        try:
            links[i] = Link(broker.bootstrap)
        except OSError as e:
            if died():
                pytest.fail(dead_report())
            pytest.fail(f"cannot connect to a running broker: {e} ({stats})")
        sel.register(links[i].sock, selectors.EVENT_READ, i)
        stats["connections"] += 1

    more = True
    while more or links:
        assert time.monotonic() - started < RUN_BUDGET_S, (
            f"{stats['sent']} of {n} frames in {RUN_BUDGET_S:.0f}s: the run is too slow ({stats})")
        # Every idle connection takes the next frame.
        for i in range(CONNECTIONS):
            if not more:
                break
            if i in links and links[i].in_flight:
                continue
            if i not in links:
                connect(i)
            try:
                name, mutations, data = next(frames)
            except StopIteration:
                more = False
                break
            what = f"#{stats['sent']} {name} {'+'.join(mutations)}: {data[4:68].hex()}"
            stats["sent"] += 1
            if not links[i].send(data, what):
                drop(i, "closed")
        for key, _ in sel.select(timeout=0.02):
            i = key.data
            outcome = links[i].read() if i in links else None
            if outcome == "answered":
                stats["answered"] += 1
            elif outcome == "closed":
                drop(i, "closed")
        now = time.monotonic()
        for i in [i for i, link in links.items() if link.in_flight and link.in_flight[1] < now]:
            drop(i, "held")
        if not more:
            for i in [i for i, link in links.items() if not link.in_flight]:
                drop(i, None)
        if stats["sent"] % 1000 == 0 and not broker.running():
            pytest.fail(dead_report())
        if stats["closed"] and not broker.running() and died():
            pytest.fail(dead_report())
    sel.close()
    stats["seconds"] = round(time.monotonic() - started, 1)
    return stats


# --- checks -----------------------------------------------------------------------------------

def kcat(broker, *args, stdin=None, timeout=30):
    cmd = ["kcat", "-b", broker.bootstrap, "-X", "socket.timeout.ms=10000", *args]
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed: {p.stderr.decode(errors='replace')}"
    return p.stdout


def assert_serving(broker):
    """The process runs, a new connection gets ApiVersions, kcat round-trips on a new topic."""
    assert broker.running(), f"the broker died (exit {broker.proc.returncode}):\n{broker._log_tail(30)}"
    with Conn(broker.bootstrap) as c:
        err, versions = c.api_versions()
        assert err == kwire.NONE and kwire.PRODUCE in versions and kwire.FETCH in versions
    topic = f"after-{uuid.uuid4().hex[:12]}"
    values = [f"value-{i}".encode() for i in range(5)]
    kcat(broker, "-P", "-t", topic, "-p", "0", stdin=b"\n".join(values) + b"\n")
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%s\n")
    assert out.splitlines() == values
    assert broker.running()


def test_twenty_thousand_mutated_real_requests_leave_the_broker_serving(broker):
    seeds = load_seeds()
    stats = run_mutations(broker, seeds)
    print(f"mutated requests: {stats}")
    assert stats["sent"] == FRAMES
    assert stats["answered"] + stats["closed"] + stats["held"] == FRAMES, stats
    # The mutations must reach the decoder and the handlers, not only the framing: many frames
    # are answered and many refused.
    assert stats["answered"] > FRAMES // 20 and stats["closed"] > FRAMES // 20, stats
    assert_serving(broker)
    assert "panicked" not in broker.log, "a mutated request panicked a task:\n" + "\n".join(
        line for line in broker.log.splitlines() if "panicked" in line)[:4000]


def test_mutations_are_deterministic():
    seeds = load_seeds()
    a = [d for _, _, d in mutated_frames(seeds, 200)]
    b = [d for _, _, d in mutated_frames(seeds, 200)]
    assert a == b and len(set(a)) > 150


# --- the frames of the issue ------------------------------------------------------------------
# Each is a complete, well-framed request whose first array claims 0x7fffffff elements (or a
# compact count of 2^31) with nothing after it: the decoder must refuse it, not size a Vec by it.

HUGE = 0x7FFFFFFF


def _metadata_v4():
    body = struct.pack(">i", HUGE) + b"\x01"  # topics, allow_auto_topic_creation
    return kwire.request_frame(kwire.METADATA, 4, body, client_id="probe-22")


def _fetch_v4():
    # replica id, max wait, min bytes, max bytes, isolation level, topics
    body = struct.pack(">iiiib", -1, 100, 1, 1 << 20, 0) + struct.pack(">i", HUGE)
    return kwire.request_frame(kwire.FETCH, 4, body)


def _produce_v3():
    # null transactional id, acks, timeout, topics
    body = struct.pack(">hhi", -1, -1, 1000) + struct.pack(">i", HUGE)
    return kwire.request_frame(kwire.PRODUCE, 3, body)


def _create_topics_v2():
    body = struct.pack(">i", HUGE) + struct.pack(">ib", 1000, 0)  # topics, timeout, validate only
    return kwire.request_frame(kwire.CREATE_TOPICS, 2, body)


def _offset_commit_v2():
    # group id, generation, member id, retention time, topics
    body = kwire.kstring("g") + struct.pack(">i", 1) + kwire.kstring("m") + struct.pack(">q", -1)
    body += struct.pack(">i", HUGE)
    return kwire.request_frame(kwire.OFFSET_COMMIT, 2, body)


def _join_group_v1():
    # group id, session timeout, rebalance timeout, member id, protocol type, protocols
    body = kwire.kstring("g") + struct.pack(">ii", 10000, 10000) + kwire.kstring("")
    body += kwire.kstring("consumer") + struct.pack(">i", HUGE)
    return kwire.request_frame(kwire.JOIN_GROUP, 1, body)


def _metadata_v12():
    # topics as a compact array of 2^31 - 1 elements (uvarint of count + 1), then
    # allow_auto_topic_creation, include_topic_authorized_operations and no tagged fields.
    body = kwire.compact_array_count(HUGE) + b"\x01\x00" + kwire.NO_TAGS
    return kwire.request_frame(kwire.METADATA, 12, body, flexible=True)


ISSUE_FRAMES = {
    "metadata-v4": _metadata_v4,
    "fetch-v4": _fetch_v4,
    "produce-v3": _produce_v3,
    "create-topics-v2": _create_topics_v2,
    "offset-commit-v2": _offset_commit_v2,
    "join-group-v1": _join_group_v1,
    "metadata-v12": _metadata_v12,
}


def test_the_issue_frame_is_twenty_three_bytes():
    frame = _metadata_v4()
    assert len(frame) == 23 and frame[-5:-1] == b"\x7f\xff\xff\xff"


@pytest.mark.parametrize("name", list(ISSUE_FRAMES))
def test_huge_array_count_leaves_the_broker_serving(broker, name):
    frame = ISSUE_FRAMES[name]()
    with Conn(broker.bootstrap) as c:
        c.send_frame(frame)
        # The broker answers with an error or closes this connection; either way it lives.
        c.is_closed(timeout=3)
    time.sleep(0.2)  # an abort is not instant: let it happen before looking
    assert_serving(broker)
