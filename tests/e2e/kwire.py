"""A tiny hand-written Kafka wire client for tests that must send what no client library sends.

The request methods speak non-flexible versions (request header v1, response header v0),
encoded with `struct` by hand, so a test controls every byte: CRCs, lengths, record counts,
versions. `request_frame` and the compact encoders (`uvarint`, `compact_string`, ...) build
any frame, flexible versions included, for `Conn.send_frame`.
"""

import gzip
import socket
import struct
import time

# Error codes (Kafka's numbering).
NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_VERSION = 35
INVALID_RECORD = 87

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, CREATE_TOPICS = 0, 1, 2, 3, 18, 19
OFFSET_COMMIT, JOIN_GROUP = 8, 11


# --- CRC-32C (Castagnoli), as record batches v2 use ----------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --- primitive encoders --------------------------------------------------------------------

def varint(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def read_varint(buf: bytes, pos: int):
    shift = z = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return (z >> 1) ^ -(z & 1), pos


def kstring(s) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def kbytes(b) -> bytes:
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def uvarint(v: int) -> bytes:
    """An unsigned varint (the compact lengths and tag counts of flexible versions)."""
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def compact_string(s) -> bytes:
    """A compact (nullable) string: uvarint(length + 1), then the bytes; 0 is null."""
    if s is None:
        return uvarint(0)
    b = s.encode() if isinstance(s, str) else s
    return uvarint(len(b) + 1) + b


def compact_array_count(n: int) -> bytes:
    """The count of a compact array: uvarint(n + 1); -1 is null."""
    return uvarint(n + 1)


NO_TAGS = uvarint(0)  # an empty tagged-fields section


def request_frame(api_key: int, version: int, body: bytes, correlation=1, client_id="strom-e2e",
                  flexible=False) -> bytes:
    """A request frame WITHOUT its length prefix: header v1 (v2 with `flexible`), then `body`."""
    header = struct.pack(">hhi", api_key, version, correlation) + kstring(client_id)
    if flexible:
        header += NO_TAGS
    return header + body


# --- record batch v2 -----------------------------------------------------------------------

def record(offset_delta: int, value: bytes, key=None, ts_delta=0, headers=()) -> bytes:
    body = bytearray(b"\x00")  # attributes
    body += varint(ts_delta) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        hk = hk.encode() if isinstance(hk, str) else hk
        body += varint(len(hk)) + hk
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def record_batch(values, keys=None, timestamp=None, last_offset_delta=None, count=None,
                 corrupt_crc=False, attributes=0) -> bytes:
    """An uncompressed v2 batch of `values`. The overrides make it deliberately wrong."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    keys = keys or [None] * len(values)
    records = b"".join(record(i, v, k) for i, (k, v) in enumerate(zip(keys, values)))
    lod = len(values) - 1 if last_offset_delta is None else last_offset_delta
    n = len(values) if count is None else count
    after_crc = struct.pack(">hiqqqhii", attributes, lod, ts, ts, -1, -1, -1, n) + records
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_len = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


# Compression codec ids and the control bit of a batch's attributes.
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
CONTROL = 0x20


def raw_record(*fields, length=None) -> bytes:
    """A record from raw fields (an int is written as a varint, bytes as they are), prefixed
    by its length (or `length`): lets a test write framing no encoder would."""
    body = b"".join(varint(f) if isinstance(f, int) else f for f in fields)
    return varint(len(body) if length is None else length) + body


def batch_of(records: bytes, count: int, attributes=0, base_offset=0, timestamp=None) -> bytes:
    """A v2 batch around an encoded (possibly compressed) records section claiming `count`
    records (last offset delta count - 1), with a correct CRC: what is wrong is inside."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    after_crc = struct.pack(">hiqqqhii", attributes, count - 1, ts, ts, -1, -1, -1, count) + records
    after_len = struct.pack(">ibI", 0, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", base_offset, len(after_len)) + after_len


def gzip_batch(records: bytes, count: int) -> bytes:
    """`batch_of` with the records section gzip-compressed (Python's stdlib)."""
    return batch_of(gzip.compress(records, 6), count, attributes=GZIP)


def parse_batches(data: bytes):
    """Yields dicts for every whole batch v2 in `data` (a fetch's records or a log file)."""
    pos = 0
    while pos + 61 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return
        magic = data[pos + 16]
        crc, attributes, lod, first_ts, max_ts = struct.unpack_from(">Ihiqq", data, pos + 17)
        count = struct.unpack_from(">i", data, pos + 57)[0]
        yield {
            "base_offset": base_offset,
            "magic": magic,
            "crc": crc,
            "crc_ok": crc == crc32c(data[pos + 21:end]),
            "attributes": attributes,
            "compression": attributes & 7,
            "last_offset_delta": lod,
            "first_timestamp": first_ts,
            "max_timestamp": max_ts,
            "count": count,
            "raw": data[pos:end],
        }
        pos = end


def uncompressed_values(batch) -> list:
    """The values of the records of an uncompressed batch from `parse_batches`."""
    assert batch["compression"] == 0
    raw, pos, out = batch["raw"], 61, []
    for _ in range(batch["count"]):
        length, pos = read_varint(raw, pos)
        end = pos + length
        p = pos + 1
        _, p = read_varint(raw, p)  # timestamp delta
        _, p = read_varint(raw, p)  # offset delta
        klen, p = read_varint(raw, p)
        p += max(klen, 0)
        vlen, p = read_varint(raw, p)
        out.append(None if vlen < 0 else raw[p:p + vlen])
        pos = end
    return out


# --- connection ----------------------------------------------------------------------------

class Closed(Exception):
    """The broker closed the connection."""


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def i64(self):
        return self.take(">q")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def bytes_(self):
        n = self.i32()
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def array(self, item):
        n = self.i32()
        return [item(self) for _ in range(max(n, 0))]

    # flexible versions

    def uvarint(self):
        v = shift = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    def uuid(self):
        b = self.data[self.pos:self.pos + 16]
        self.pos += 16
        return b

    def cstring(self):
        """A compact nullable string."""
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def cbytes(self):
        n = self.uvarint() - 1
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def carray(self, item):
        """A compact array of `item` (each a struct ending in its tagged fields, or not)."""
        n = self.uvarint() - 1
        return [item(self) for _ in range(max(n, 0))]

    def tags(self):
        """Skips a tagged-field section."""
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


class Conn:
    def __init__(self, bootstrap: str, timeout=10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send_frame(self, frame: bytes):
        """Sends a frame (from `request_frame`) with its length prefix."""
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed("connection reset") from e
            if not chunk:
                raise Closed("broker closed the connection")
            buf += chunk
        return bytes(buf)

    def send_request(self, api_key: int, version: int, body: bytes, client_id="strom-e2e") -> int:
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + kstring(client_id)
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        return self.correlation

    def recv_response(self, correlation: int) -> Reader:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        payload = self.recv_exact(size)
        got = struct.unpack_from(">i", payload)[0]
        assert got == correlation, f"correlation id {got}, expected {correlation}"
        return Reader(payload[4:])

    def call(self, api_key, version, body) -> Reader:
        return self.recv_response(self.send_request(api_key, version, body))

    def call_flexible(self, api_key, version, body, client_id="strom-e2e") -> Reader:
        """A request in a flexible version (header v2); the reader starts at the body (the
        response header's tagged fields skipped)."""
        self.correlation += 1
        self.send_frame(request_frame(api_key, version, body, self.correlation, client_id,
                                      flexible=True))
        r = self.recv_response(self.correlation)
        r.tags()
        return r

    def is_closed(self, timeout=10.0) -> bool:
        """True when the broker closes the connection within `timeout` (nothing else is read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    # --- requests ----------------------------------------------------------------------

    def api_versions(self, version=2):
        r = self.call(API_VERSIONS, version, b"")
        error = r.i16()
        keys = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
        return error, {k: (lo, hi) for k, lo, hi in keys}

    def produce(self, topic, partition, records: bytes, acks=-1, version=3, timeout_ms=10000):
        """Produce v3..v8 (non-flexible). Returns (error_code, base_offset)."""
        p = self.produce_partition(topic, partition, records, acks, version, timeout_ms)
        return None if p is None else (p["error_code"], p["base_offset"])

    def produce_partition(self, topic, partition, records: bytes, acks=-1, version=3,
                          timeout_ms=10000):
        """Produce v3..v8 (non-flexible): the partition's response as a dict (from v8 with
        `record_errors` [(batch_index, message)] and `error_message`, KIP-467)."""
        body = struct.pack(">hhi", -1, acks, timeout_ms)  # null transactional id
        body += struct.pack(">i", 1) + kstring(topic)
        body += struct.pack(">i", 1) + struct.pack(">i", partition) + kbytes(records)
        if acks == 0:
            self.send_request(PRODUCE, version, body)
            return None
        r = self.call(PRODUCE, version, body)
        responses = r.array(lambda r: (r.string(), r.array(_produce_partition(version))))
        (_, parts), = responses
        (p,) = parts
        return p

    def fetch(self, topic, partition, offset, max_bytes=64 << 20, max_wait_ms=0):
        """Fetch v4. Returns (error_code, high_watermark, records bytes)."""
        body = struct.pack(">iiiib", -1, max_wait_ms, 0, max_bytes, 0)
        body += struct.pack(">i", 1) + kstring(topic)
        body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
        r = self.call(FETCH, 4, body)
        r.i32()  # throttle

        def part(r):
            p = {"partition": r.i32(), "error_code": r.i16(), "high_watermark": r.i64(),
                 "last_stable_offset": r.i64()}
            r.array(lambda r: (r.i64(), r.i64()))
            p["records"] = r.bytes_() or b""
            return p

        (_, (p,)), = r.array(lambda r: (r.string(), r.array(part)))
        return p["error_code"], p["high_watermark"], p["records"]

    def metadata(self, topics, version=4, allow_auto_topic_creation=False):
        """Metadata v4. Returns {topic: (error_code, partition count)}."""
        body = struct.pack(">i", len(topics)) + b"".join(kstring(t) for t in topics)
        body += struct.pack(">b", 1 if allow_auto_topic_creation else 0)
        r = self.call(METADATA, version, body)
        r.i32()  # throttle
        r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string()))  # brokers
        r.string()  # cluster id
        r.i32()  # controller id

        def topic(r):
            err, name, _internal = r.i16(), r.string(), r.i8()
            parts = r.array(lambda r: (r.i16(), r.i32(), r.i32(), r.array(lambda r: r.i32()),
                                       r.array(lambda r: r.i32())))
            return name, (err, len(parts))

        return dict(r.array(topic))

    def create_topic(self, name, partitions=1, configs=None, version=2):
        """CreateTopics v2. Returns the topic's error code."""
        configs = configs or {}
        body = struct.pack(">i", 1) + kstring(name) + struct.pack(">ih", partitions, -1)
        body += struct.pack(">i", 0)  # assignments
        body += struct.pack(">i", len(configs))
        for k, v in configs.items():
            body += kstring(k) + kstring(str(v))
        body += struct.pack(">ib", 10000, 0)  # timeout, validate_only
        r = self.call(CREATE_TOPICS, version, body)
        r.i32()
        ((_, err, _msg),) = r.array(lambda r: (r.string(), r.i16(), r.string()))
        return err


def _produce_partition(version):
    def part(r):
        p = {"index": r.i32(), "error_code": r.i16(), "base_offset": r.i64()}
        if version >= 2:
            p["log_append_time"] = r.i64()
        if version >= 5:
            p["log_start_offset"] = r.i64()
        if version >= 8:
            p["record_errors"] = r.array(lambda r: (r.i32(), r.string()))
            p["error_message"] = r.string()
        return p

    return part


def fetch_all(bootstrap, topic, partition, timeout_s=20.0):
    """Every batch of a partition from offset 0 to the high watermark, via raw Fetch v4."""
    out, offset = [], 0
    deadline = time.monotonic() + timeout_s
    with Conn(bootstrap) as c:
        while True:
            err, hw, data = c.fetch(topic, partition, offset)
            assert err == NONE, f"fetch {topic}/{partition}@{offset}: error {err}"
            batches = [b for b in parse_batches(data)
                       if b["base_offset"] + b["last_offset_delta"] >= offset]
            out += batches
            if batches:
                offset = batches[-1]["base_offset"] + batches[-1]["last_offset_delta"] + 1
            if offset >= hw:
                return out
            assert time.monotonic() < deadline, f"fetch did not reach the high watermark {hw}"
