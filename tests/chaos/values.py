"""The chaos suite's record values: each names its partition and sequence number and carries a
filler derived from both, so a value read back can be checked byte for byte against what was sent.

    value(p, seq, size) = b"PP:SSSSSSSSSS:" + filler   (2-digit partition, 10-digit sequence)
"""

HEAD_LEN = 14


def _filler(p: int, seq: int, n: int) -> bytes:
    word = b"%08x" % (((p * 1_000_003 + seq) * 2_654_435_761) & 0xFFFFFFFF)
    return (word * (n // 8 + 1))[:n]


def value(p: int, seq: int, size: int) -> bytes:
    return b"%02d:%010d:" % (p, seq) + _filler(p, seq, max(0, size - HEAD_LEN))


def parse(v: bytes, size: int = None):
    """(partition, seq) of a value made by `value` (of `size` bytes, if given), or None if it is
    not one (corrupt, cut, foreign)."""
    if size is not None and (v is None or len(v) != max(size, HEAD_LEN)):
        return None
    if v is None or len(v) < HEAD_LEN or v[2:3] != b":" or v[13:14] != b":":
        return None
    try:
        p, seq = int(v[0:2]), int(v[3:13])
    except ValueError:
        return None
    if v != value(p, seq, len(v)):
        return None
    return p, seq
