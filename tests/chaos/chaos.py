"""The chaos suite's machinery: the load and group-member processes, the kill cycle, damage to
the files of a stopped broker, reading a topic back and checking it against what was acknowledged.

The checks return counts and examples and the tests assert on them; `kill_cycles` raises
AssertionError only when a run cannot go on (a restarted broker that never acknowledges again).
"""

import json
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

from values import parse

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

# How many kill cycles a test runs: CHAOS_CYCLES (the long form: scripts/chaos, 100).
CYCLES = int(os.environ.get("CHAOS_CYCLES", "6"))
# The longest a cycle runs under load before its kill (uniformly random below it).
RUN_S_MAX = float(os.environ.get("CHAOS_RUN_S_MAX", "1.0"))
# After a kill, how long to let the client side settle before the files are looked at: every
# response the dead broker had sent is read and reported by then.
SETTLE_S = 0.4
# A restarted broker must accept connections and acknowledge a produce within this.
FIRST_ACK_TIMEOUT_S = 60.0

# The v2 batch header fields the suite reads (docs/on-disk-format.md).
HEADER_LEN = 61
LOG_OVERHEAD = 12


# --- processes --------------------------------------------------------------------------------


class _Child:
    """A helper process writing lines to a file that the test reads as it grows."""

    script = None

    def __init__(self, workdir: Path, name: str, cfg: dict):
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        self.out.write_bytes(b"")
        self.cfg = dict(cfg, out=str(self.out))
        self.proc = None
        self._pos = 0
        self._partial = b""

    def start(self):
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen([PYTHON, str(HERE / self.script), json.dumps(self.cfg)],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        return self

    def lines(self):
        """The lines written since the last call (whole lines only)."""
        with open(self.out, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        data = self._partial + data
        *whole, self._partial = data.split(b"\n")
        return [w.decode() for w in whole]

    def stop(self, timeout_s):
        """SIGTERM, wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr_tail(self, n=30):
        try:
            return "\n".join(self.err.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Run:
    """`count` records of one partition, `seq`.. acknowledged at `offset`.., first at `t`."""
    offset: int
    seq: int
    count: int
    t: float


class Load(_Child):
    """The idempotent producer of load_producer.py and what it reported."""

    script = "load_producer.py"

    def __init__(self, workdir, bootstrap, topic, partitions, value_bytes=100, extra=None):
        super().__init__(workdir, "load", {"bootstrap": bootstrap, "topic": topic,
                                           "partitions": partitions, "value_bytes": value_bytes,
                                           "extra": extra or {}})
        self.topic, self.partitions = topic, partitions
        self.runs = {p: [] for p in range(partitions)}
        self.failed = {p: [] for p in range(partitions)}
        self.errors = []
        self.sent = None
        self.fatal = None
        self.outstanding = None
        self.acked = 0
        self.last_ack_t = 0.0

    def poll(self):
        for line in self.lines():
            kind, _, rest = line.partition(" ")
            f = rest.split(" ")
            if kind == "A":
                r = Run(int(f[1]), int(f[2]), int(f[3]), float(f[4]))
                self.runs[int(f[0])].append(r)
                self.acked += r.count
                self.last_ack_t = max(self.last_ack_t, r.t)
            elif kind == "F":
                self.failed[int(f[0])].append((int(f[1]), f[2]))
            elif kind == "E":
                self.errors.append(rest)
            elif kind == "S":
                self.sent = self.sent or {}
                self.sent[int(f[0])] = int(f[1])
            elif kind == "X":
                self.fatal = rest
            elif kind == "Q":
                self.outstanding = int(f[0])
        return self

    def wait_ack_after(self, t0, timeout_s, alive=lambda: True):
        """Time of the first acknowledgement later than `t0` (waits for it), or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            later = []
            for runs in self.runs.values():
                # A partition's runs are in the order acknowledged: look back from the newest.
                for r in reversed(runs):
                    if r.t <= t0:
                        break
                    later.append(r.t)
            if later:
                return min(later)
            if self.proc.poll() is not None or not alive():
                return None
            time.sleep(0.01)
        return None

    def max_acked_offset(self, p):
        return max((r.offset + r.count - 1 for r in self.runs[p]), default=-1)

    def finish(self, timeout_s=120):
        """Stops producing, drains what is outstanding; returns the exit code."""
        code = self.stop(timeout_s)
        self.poll()
        return code


class Member(_Child):
    """The consumer-group member of group_member.py and the commits it saw succeed."""

    script = "group_member.py"

    def __init__(self, workdir, bootstrap, group, topic, commit_interval_ms=100):
        super().__init__(workdir, f"member-{group}", {"bootstrap": bootstrap, "group": group,
                                                     "topic": topic,
                                                     "commit_interval_ms": commit_interval_ms})
        self.commits = []  # (t, partition, offset), in the order acknowledged
        self.commit_errors = []
        self.consumed = 0

    def poll(self):
        for line in self.lines():
            f = line.split(" ")
            if f[0] == "C":
                self.commits.append((float(f[1]), int(f[2]), int(f[3])))
            elif f[0] == "CE":
                self.commit_errors.append((float(f[1]), f[2]))
            elif f[0] == "N":
                self.consumed = int(f[2])
        return self

    def last_commit_before(self, t):
        """Per partition, the newest offset whose commit was acknowledged before `t`."""
        out = {}
        for ct, p, o in self.commits:
            if ct < t:
                out[p] = o  # commits of one partition are acknowledged in order
        return out


# --- the broker's files -----------------------------------------------------------------------


def partition_dir(broker, topic, p) -> Path:
    return broker.data_dir / f"{topic}-{p}"


def segment_bases(pdir: Path):
    return sorted(int(f.name[:-4]) for f in pdir.glob("*.log") if f.name[:-4].isdigit())


def seg_path(pdir: Path, base: int, ext: str) -> Path:
    return pdir / f"{base:020d}.{ext}"


def batches(path: Path):
    """(position, base offset, last offset, total length) of the batches at the start of a
    segment file, up to the first that does not fit or has an impossible length."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + HEADER_LEN <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        total = LOG_OVERHEAD + length
        if length < HEADER_LEN - LOG_OVERHEAD or pos + total > len(data):
            break
        (delta,) = struct.unpack_from(">i", data, pos + 23)
        out.append((pos, base, base + delta, total))
        pos += total
    return out


def _xor_bytes(rng, data: bytearray, lo: int, hi: int, n: int):
    """Flips `n` bytes at random positions in [lo, hi) (xor with a non-zero byte)."""
    where = sorted(rng.randrange(lo, hi) for _ in range(n))
    for i in where:
        data[i] ^= rng.randrange(1, 256)
    return where


TAIL_MODES = ("garbage", "partial-batch", "zeros", "stale-batch", "flip-unacked")


def damage_tail(rng, pdir: Path, acked_max: int, mode: str) -> str:
    """Damages the end of a stopped partition's active segment the way `mode` says and returns
    what was done. Only bytes after the last acknowledged batch are changed (`flip-unacked`), or
    bytes are appended (the other modes)."""
    base = segment_bases(pdir)[-1]
    path = seg_path(pdir, base, "log")
    data = bytearray(path.read_bytes())
    found = batches(path)
    if mode == "flip-unacked":
        # The first byte after the batch holding the newest acknowledged record.
        lo = next((pos + total for pos, _b, last, total in found if last == acked_max), None)
        if lo is None:
            lo = 0 if acked_max < base else None
        if lo is None or lo >= len(data):
            mode = "partial-batch"  # nothing unacknowledged is stored here
        else:
            where = _xor_bytes(rng, data, lo, len(data), rng.randint(1, 3))
            path.write_bytes(bytes(data))
            return f"{path.name}: flipped bytes at {where} (unacknowledged from {lo}, size {len(data)})"
    if mode in ("partial-batch", "stale-batch") and not found:
        mode = "garbage"
    if mode == "garbage":
        extra = rng.randbytes(rng.randint(1, 8192))
    elif mode == "zeros":
        extra = bytes(rng.randint(1, 8192))
    else:
        pos, _b, last, total = found[-1]
        batch = bytearray(data[pos:pos + total])
        if mode == "partial-batch":
            struct.pack_into(">q", batch, 0, last + 1)  # the next batch, cut short
            extra = bytes(batch[:rng.randint(1, total - 1)])
        else:
            extra = bytes(batch)  # a whole CRC-valid batch again, at the wrong offset
    with open(path, "ab") as f:
        f.write(extra)
    return f"{path.name}: appended {len(extra)} bytes ({mode}) to {len(data)}"


INDEX_MODES = ("garbage", "truncated", "zero-length", "extended", "deleted")


def damage_file(rng, path: Path, mode: str) -> str:
    """Damages an index or snapshot file: `garbage` (random bytes of the same length),
    `truncated` (a random prefix), `zero-length`, `extended` (random bytes appended),
    `deleted`."""
    if not path.exists():
        return f"{path.name}: absent"
    data = path.read_bytes()
    if mode == "garbage":
        path.write_bytes(rng.randbytes(max(len(data), 1)))
    elif mode == "truncated":
        path.write_bytes(data[:rng.randrange(0, max(len(data), 1))])
    elif mode == "zero-length":
        path.write_bytes(b"")
    elif mode == "extended":
        path.write_bytes(data + rng.randbytes(rng.randint(1, 200)))
    elif mode == "deleted":
        path.unlink()
    else:
        raise ValueError(mode)
    return f"{path.name}: {mode} (was {len(data)} bytes)"


# --- reading back -----------------------------------------------------------------------------


def _kcat_partition(bootstrap, topic, p, out_path, timeout_s):
    """kcat reads every record of a partition from its log start to its end (CRCs checked) into
    `out_path` as `<offset> <timestamp> <value length> <value>\\n`; returns kcat's complaints."""
    cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", "beginning", "-e", "-q",
           "-X", "check.crcs=true", "-f", "%o %T %S %s\n"]
    with open(out_path, "wb") as out:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
                           timeout=timeout_s)
    return r.stderr.decode(errors="replace") + (f" (exit {r.returncode})" if r.returncode else "")


def _parse_records(path):
    """Yields (offset, timestamp ms, value bytes) from a file written by `_kcat_partition`."""
    with open(path, "rb") as f:
        buf, i = b"", 0
        while True:
            j = -1
            for _ in range(3):
                j = buf.find(b" ", j + 1 if j >= 0 else i)
                if j < 0:
                    break
            if j >= 0:
                off_s, ts_s, n_s = buf[i:j].split(b" ")
                n = max(int(n_s), 0)
                if j + 1 + n + 1 <= len(buf):
                    yield int(off_s), int(ts_s), buf[j + 1:j + 1 + n]
                    i = j + 1 + n + 1
                    continue
            more = f.read(1 << 20)
            if not more:
                return
            buf, i = buf[i:] + more, 0


def read_partition(bootstrap, topic, p, timeout_s):
    """Every record of a partition from its log start to its end, read with kcat (CRCs
    checked): a list of (offset, timestamp ms, value bytes), and kcat's complaints."""
    with tempfile.NamedTemporaryFile(prefix="strom-chaos-kcat-") as tmp:
        err = _kcat_partition(bootstrap, topic, p, tmp.name, timeout_s)
        return list(_parse_records(tmp.name)), err


def watermarks(bootstrap, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)}
    finally:
        c.close()


@dataclass
class Check:
    """The outcome of checking a topic against a load's acknowledgements."""
    acked: int = 0
    stored: int = 0
    lost: int = 0          # acknowledged, not stored
    moved: int = 0         # acknowledged at one offset, stored at another
    duplicated: int = 0    # a value stored more than once
    reordered: int = 0     # a value stored before one sent earlier to the same partition
    foreign: int = 0       # a stored value that was never sent (or is corrupt)
    holes: int = 0         # offsets missing between the log start and the end
    unacked_stored: int = 0
    kcat_errors: list = field(default_factory=list)
    examples: list = field(default_factory=list)
    timestamps: dict = field(default_factory=dict)  # partition -> (offsets array, timestamps array)

    def problems(self):
        return (self.lost + self.moved + self.duplicated + self.reordered + self.foreign
                + self.holes + len(self.kcat_errors))

    def counts(self):
        return {k: getattr(self, k) for k in ("acked", "stored", "lost", "moved", "duplicated",
                                               "reordered", "foreign", "holes", "unacked_stored")}

    def note(self, text):
        if len(self.examples) < 12:
            self.examples.append(text)


def check_topic(broker, load: Load, timeout_s=600) -> Check:
    """Reads the topic back and checks it against what `load` sent and had acknowledged."""
    c = Check()
    marks = watermarks(broker.bootstrap, load.topic, load.partitions)
    for p in range(load.partitions):
        lo, hi = marks[p]
        with tempfile.NamedTemporaryFile(prefix="strom-chaos-kcat-") as tmp:
            err = _kcat_partition(broker.bootstrap, load.topic, p, tmp.name, timeout_s)
            if "error" in err.lower() or "exit" in err:
                c.kcat_errors.append(f"p{p}: {err.strip()[:500]}")
            _check_partition(c, p, lo, hi, _parse_records(tmp.name), load)
    return c


def _check_partition(c: Check, p, lo, hi, records, load: Load):
    sent = (load.sent or {}).get(p)
    limit = sent if sent is not None else max((r.seq + r.count for r in load.runs[p]), default=0)
    seen = bytearray(limit + 1)  # by seq: stored at least once
    seq_at = array("q")  # by offset - lo; -1 where the value is not one of ours, -2 in a hole
    offs, tss = array("q"), array("q")
    expect, prev_seq = lo, -1
    for off, ts, v in records:
        if off != expect:
            c.holes += abs(off - expect)
            c.note(f"p{p}: offset {off} where {expect} was expected")
            while expect < off:
                seq_at.append(-2)
                expect += 1
        expect = off + 1
        offs.append(off)
        tss.append(ts)
        c.stored += 1
        got = parse(v, load.cfg.get("value_bytes"))
        if got is None or got[0] != p or got[1] >= limit:
            c.foreign += 1
            c.note(f"p{p} offset {off}: a value never sent: {v[:40]!r}")
            seq_at.append(-1)
            continue
        seq = got[1]
        seq_at.append(seq)
        if seen[seq]:
            c.duplicated += 1
            c.note(f"p{p} offset {off}: seq {seq} stored again")
        elif seq < prev_seq:
            c.reordered += 1
            c.note(f"p{p} offset {off}: seq {seq} after seq {prev_seq}")
        seen[seq] = 1
        prev_seq = max(prev_seq, seq)
    if expect != hi:
        c.holes += abs(hi - expect)
        c.note(f"p{p}: read up to {expect}, the high watermark is {hi}")
    c.timestamps[p] = (offs, tss)
    acked = bytearray(limit + 1)
    for r in load.runs[p]:
        for i in range(r.count):
            c.acked += 1
            off, seq = r.offset + i, r.seq + i
            acked[seq] = 1
            k = off - lo
            if 0 <= k < len(seq_at) and seq_at[k] == seq:
                continue
            if seen[seq]:
                c.moved += 1
                c.note(f"p{p}: seq {seq} acknowledged at {off}, stored elsewhere")
            else:
                c.lost += 1
                c.note(f"p{p}: seq {seq} acknowledged at offset {off}, not stored")
    c.unacked_stored += sum(1 for s_, a in zip(seen, acked) if s_ and not a)


def expected_offset_for_time(offs, tss, target):
    """Kafka's ListOffsets by time: the first offset whose timestamp is at least `target`."""
    best = None
    if all(tss[i] <= tss[i + 1] for i in range(len(tss) - 1)):
        k = bisect_left(tss, target)
        return offs[k] if k < len(offs) else None
    for o, t in zip(offs, tss):
        if t >= target and (best is None or o < best):
            best = o
    return best


# --- restart times ----------------------------------------------------------------------------


def pct(xs, q):
    """The q-quantile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))] if s else None


def summary(xs):
    return {"n": len(xs), "p50_ms": ms(pct(xs, 0.5)), "p99_ms": ms(pct(xs, 0.99)),
            "max_ms": ms(max(xs) if xs else None),
            "mean_ms": ms(statistics.fmean(xs) if xs else None)}


def ms(s):
    return None if s is None else round(s * 1000, 1)


PROBE_TOPIC = "chaos-probe"


def probe_produce(broker, timeout_s=FIRST_ACK_TIMEOUT_S):
    """Produces one record (acks=all) with a fresh client; the monotonic time of its ack."""
    from confluent_kafka import Producer
    got = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": False, "message.timeout.ms": int(timeout_s * 1000),
                  "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50})
    p.produce(PROBE_TOPIC, b"probe", on_delivery=lambda e, m: got.append((e, time.monotonic())))
    p.flush(timeout_s)
    if not got or got[0][0] is not None:
        return None
    return got[0][1]


@dataclass
class Cycles:
    """What a series of kill cycles measured, per restart: spawn → accepting connections
    (`ready_s`), spawn → the first produce of a fresh client acknowledged (`first_ack_s`), spawn →
    the load's first acknowledgement (`load_resumed_s`: the long-lived client's reconnect and
    retry backoff included)."""
    ready_s: list = field(default_factory=list)
    first_ack_s: list = field(default_factory=list)
    load_resumed_s: list = field(default_factory=list)
    damage: list = field(default_factory=list)
    late_acks: list = field(default_factory=list)
    kill_wall_ms: list = field(default_factory=list)  # time.time() of each kill, in ms

    def report(self):
        return {"cycles": len(self.ready_s), "ready": summary(self.ready_s),
                "first_produce": summary(self.first_ack_s),
                "load_resumed": summary(self.load_resumed_s)}


def kill_cycles(broker, load: Load, cycles: int, rng: random.Random, damage=None,
                after_restart=None) -> Cycles:
    """`cycles` times: run under load for a random while (after the first acknowledgement of the
    broker's current run), SIGKILL the broker, optionally `damage(cycle)` its files (once what it
    had acknowledged is known), start it again on the same data dir and wait until the load is
    acknowledged again. `after_restart(cycle, cycles)` runs after each restart."""
    out = Cycles()
    create_topic(broker, PROBE_TOPIC, 1, {})
    first = load.wait_ack_after(broker.spawned_at, FIRST_ACK_TIMEOUT_S, broker.running)
    if first is None:
        raise AssertionError(f"the load was never acknowledged: {load.errors[-5:]} {load.stderr_tail()}")
    for cycle in range(cycles):
        time.sleep(rng.uniform(0, RUN_S_MAX))
        broker.kill()
        out.kill_wall_ms.append(int(time.time() * 1000))
        if damage is not None:
            time.sleep(SETTLE_S)
            load.poll()
            decided = time.monotonic()
            out.damage.append((cycle, damage(cycle)))
        else:
            time.sleep(rng.uniform(0, 0.2))  # down for a while: the client retries meanwhile
            decided = None
        broker.start()
        out.ready_s.append(broker.ready_at - broker.spawned_at)
        probed = probe_produce(broker)
        if probed is None:
            raise AssertionError(f"cycle {cycle}: a fresh producer's record was not acknowledged "
                                 f"within {FIRST_ACK_TIMEOUT_S:.0f}s of the restart")
        out.first_ack_s.append(probed - broker.spawned_at)
        first = load.wait_ack_after(broker.spawned_at, FIRST_ACK_TIMEOUT_S, broker.running)
        if first is None:
            raise AssertionError(f"cycle {cycle}: nothing acknowledged within {FIRST_ACK_TIMEOUT_S:.0f}s "
                                 f"of the restart (broker running: {broker.running()}); client errors: "
                                 f"{load.errors[-5:]}\n{load.stderr_tail()}")
        out.load_resumed_s.append(first - broker.spawned_at)
        if decided is not None:
            # Acks of the dead broker that were reported after the damage was chosen: the damage
            # may then have hit acknowledged bytes (a flaw of the harness, not of the broker).
            late = [(p, r.offset) for p, rs in load.runs.items() for r in rs
                    if decided - 0.1 <= r.t < broker.spawned_at]
            out.late_acks += late
        if after_restart is not None:
            after_restart(cycle, out)
    return out


# --- test helpers -----------------------------------------------------------------------------


def create_topic(broker, name, partitions, config):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = a.create_topics([NewTopic(name, partitions, 1, config=config)], operation_timeout=10)
    fs[name].result(timeout=20)


def seed():
    """The run's random seed: CHAOS_SEED, else a fresh one (printed by the tests that use it)."""
    return int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 32))


def failure_text(check: Check, load: Load, cycles: Cycles, rng_seed) -> str:
    lines = [f"seed {rng_seed} (CHAOS_SEED={rng_seed} reproduces the choices), {check.counts()}"]
    lines += [f"  {e}" for e in check.examples]
    lines += [f"  kcat: {e}" for e in check.kcat_errors]
    if cycles.damage:
        lines.append("damage done:")
        lines += [f"  cycle {c}: {d}" for c, d in cycles.damage]
    if load.errors:
        lines.append(f"client errors (last 5 of {len(load.errors)}): {load.errors[-5:]}")
    return "\n".join(lines)


def assert_load_clean(load: Load, code):
    """The producer drained and exited cleanly: no fatal error, no failed delivery."""
    failed = {p: f[:3] for p, f in load.failed.items() if f}
    assert load.fatal is None, f"the idempotent producer hit a fatal error: {load.fatal}; {load.errors[-5:]}"
    assert code == 0, f"the load exited with {code}: {load.stderr_tail()}"
    assert not failed, f"deliveries failed (e.g. {failed}); client errors {load.errors[-5:]}"
    assert load.outstanding == 0, f"{load.outstanding} records still unacknowledged after the drain"
