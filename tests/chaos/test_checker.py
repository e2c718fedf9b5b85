"""The chaos suite's own check (chaos._check_partition) finds each kind of damage it counts:
a suite whose checker saw nothing would pass whatever the broker did. No broker involved."""

import pytest

import chaos
from values import parse, value


class FakeLoad:
    def __init__(self, sent, runs):
        self.sent = {0: sent}
        self.cfg = {"value_bytes": 40}
        self.runs = {0: [chaos.Run(off, seq, n, 0.0) for off, seq, n in runs]}


def check(stored, runs, sent=10, hi=None, cut=()):
    """stored: [(offset, seq or None for a foreign value)]; runs: [(offset, seq, count)]."""
    records = [(o, 1, value(0, s, 40) if s is not None else b"not ours") for o, s in stored]
    records += [(o, 1, value(0, s, 40)[:-1]) for o, s in cut]
    end = hi if hi is not None else (stored[-1][0] + 1 if stored else 0)
    c = chaos.Check()
    chaos._check_partition(c, 0, 0, end, records, FakeLoad(sent, runs))
    return {k: v for k, v in c.counts().items() if v}


CLEAN = [(i, i) for i in range(5)]


@pytest.mark.parametrize("stored,runs,hi,want", [
    (CLEAN, [(0, 0, 5)], None, {"acked": 5, "stored": 5}),
    (CLEAN[:3], [(0, 0, 5)], 5, {"acked": 5, "stored": 3, "lost": 2, "holes": 2}),
    (CLEAN + [(5, 4)], [(0, 0, 5)], None, {"acked": 5, "stored": 6, "duplicated": 1}),
    ([(0, 1), (1, 0), (2, 2)], [(0, 1, 1), (1, 0, 1)], None,
     {"acked": 2, "stored": 3, "reordered": 1, "unacked_stored": 1}),
    (CLEAN, [(1, 0, 1)], None, {"acked": 1, "stored": 5, "moved": 1, "unacked_stored": 4}),
    (CLEAN + [(5, 12), (6, None)], [(0, 0, 5)], None, {"acked": 5, "stored": 7, "foreign": 2}),
    ([(0, 0), (2, 2)], [(0, 0, 1)], None, {"acked": 1, "stored": 2, "holes": 1, "unacked_stored": 1}),
], ids=["clean", "lost", "duplicated", "reordered", "moved", "never-sent", "hole"])
def test_check_counts_each_problem(stored, runs, hi, want):
    assert check(stored, runs, hi=hi) == want


def test_check_counts_a_cut_value_as_never_sent():
    assert check(CLEAN, [(0, 0, 5)], hi=6, cut=[(5, 5)]) == {"acked": 5, "stored": 6, "foreign": 1}


def test_values_round_trip_and_reject_damage():
    v = value(3, 123456, 100)
    assert len(v) == 100 and parse(v) == (3, 123456)
    for i in range(len(v)):
        bad = bytearray(v)
        bad[i] ^= 0x01
        assert parse(bytes(bad)) != (3, 123456), f"a flipped byte at {i} went unnoticed"
    assert parse(v, 100) == (3, 123456)
    assert parse(v[:-1], 100) is None and parse(v + b"x", 100) is None
