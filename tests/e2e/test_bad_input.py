"""Bad input over a raw socket (issue 3): every malformed or refused request gets the right error
code or a closed connection, nothing of it reaches the log, and the broker keeps serving.

Requests are hand-encoded (`kwire`), because no client library sends a wrong CRC on purpose.
Each test ends with `assert_serving_and_log`: a fresh connection still works and the partition
holds exactly the good batches, byte for byte.
"""

import struct

import pytest

import kwire
from kwire import Conn

pytestmark = pytest.mark.timeout(120)


def good_batch(*values):
    return kwire.record_batch([v.encode() for v in values])


def assert_serving_and_log(broker, topic, expected_values, partition=0):
    """A new client is served, and the partition holds exactly `expected_values`, in order."""
    with Conn(broker.bootstrap) as c:
        err, versions = c.api_versions()
        assert err == kwire.NONE and kwire.PRODUCE in versions
    batches = kwire.fetch_all(broker.bootstrap, topic, partition)
    assert all(b["crc_ok"] for b in batches), "a stored batch has a bad CRC"
    values = [v for b in batches for v in kwire.uncompressed_values(b)]
    assert values == [v.encode() for v in expected_values]
    offsets = [b["base_offset"] for b in batches]
    assert offsets == sorted(offsets) and (not offsets or offsets[0] == 0)


def setup_topic(broker, name, configs=None):
    with Conn(broker.bootstrap) as c:
        assert c.create_topic(name, 1, configs) == kwire.NONE
        err, base = c.produce(name, 0, good_batch("good-0", "good-1"))
        assert (err, base) == (kwire.NONE, 0)


def test_wrong_crc_is_corrupt_message(broker):
    setup_topic(broker, "bad-crc")
    with Conn(broker.bootstrap) as c:
        bad = kwire.record_batch([b"evil"], corrupt_crc=True)
        err, _ = c.produce("bad-crc", 0, bad)
        assert err == kwire.CORRUPT_MESSAGE
        # The same connection goes on working after a refused batch.
        assert c.produce("bad-crc", 0, good_batch("good-2")) == (kwire.NONE, 2)
    assert_serving_and_log(broker, "bad-crc", ["good-0", "good-1", "good-2"])


def test_flipped_byte_inside_records_is_corrupt_message(broker):
    setup_topic(broker, "bad-byte")
    batch = bytearray(good_batch("abcdefgh"))
    batch[-3] ^= 0x01  # inside the value, covered by the CRC
    with Conn(broker.bootstrap) as c:
        assert c.produce("bad-byte", 0, bytes(batch))[0] == kwire.CORRUPT_MESSAGE
    assert_serving_and_log(broker, "bad-byte", ["good-0", "good-1"])


@pytest.mark.parametrize("lod", [0, 2, -1])
def test_last_offset_delta_disagreeing_with_record_count_is_rejected(broker, lod):
    setup_topic(broker, "bad-lod")
    bad = kwire.record_batch([b"a", b"b"], last_offset_delta=lod)  # 2 records: delta must be 1
    with Conn(broker.bootstrap) as c:
        err, _ = c.produce("bad-lod", 0, bad)
        assert err in (kwire.INVALID_RECORD, kwire.CORRUPT_MESSAGE), f"error {err}"
    assert_serving_and_log(broker, "bad-lod", ["good-0", "good-1"])


def test_record_count_field_disagreeing_with_records_is_rejected(broker):
    setup_topic(broker, "bad-count")
    bad = kwire.record_batch([b"a", b"b"], count=3, last_offset_delta=2)
    with Conn(broker.bootstrap) as c:
        err, _ = c.produce("bad-count", 0, bad)
        assert err in (kwire.INVALID_RECORD, kwire.CORRUPT_MESSAGE), f"error {err}"
    assert_serving_and_log(broker, "bad-count", ["good-0", "good-1"])


def test_truncated_batch_inside_a_whole_frame_is_refused(broker):
    setup_topic(broker, "bad-trunc")
    batch = good_batch("will be cut short")
    with Conn(broker.bootstrap) as c:
        err, _ = c.produce("bad-trunc", 0, batch[:-5])
        assert err in (kwire.CORRUPT_MESSAGE, kwire.INVALID_RECORD), f"error {err}"
    assert_serving_and_log(broker, "bad-trunc", ["good-0", "good-1"])


def test_truncated_frame_closes_the_connection(broker):
    setup_topic(broker, "frame-trunc")
    # (a) A frame whose length is right but whose content stops inside the request header.
    with Conn(broker.bootstrap) as c:
        body = struct.pack(">hhi", kwire.PRODUCE, 3, 7) + struct.pack(">h", 200) + b"short"
        c.send_raw(struct.pack(">i", len(body)) + body)
        assert c.is_closed(), "broker kept a connection whose request could not be decoded"
    # (b) A produce whose frame ends in the middle of its body.
    with Conn(broker.bootstrap) as c:
        body = struct.pack(">hhi", kwire.PRODUCE, 3, 8) + kwire.kstring("x")
        body += struct.pack(">hhi", -1, -1, 1000) + struct.pack(">i", 1) + kwire.kstring("frame-trunc")
        body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", 5000) + b"\x00" * 10
        c.send_raw(struct.pack(">i", len(body)) + body)
        assert c.is_closed()
    # (c) The client promises more bytes than it sends, then closes its side.
    with Conn(broker.bootstrap) as c:
        c.send_raw(struct.pack(">i", 1000) + b"\x00\x12\x00\x00")
        c.sock.shutdown(1)  # SHUT_WR
        assert c.is_closed()
    assert_serving_and_log(broker, "frame-trunc", ["good-0", "good-1"])


def test_frame_above_the_request_limit_closes_the_connection(broker_factory):
    limit = 1 << 20
    broker = broker_factory(max_request_bytes=limit)
    setup_topic(broker, "big-frame")
    with Conn(broker.bootstrap) as c:
        # Announce a frame above the limit: the broker must close without reading it all.
        c.send_raw(struct.pack(">i", limit + 1) + struct.pack(">hhi", kwire.PRODUCE, 3, 1))
        assert c.is_closed(), "a frame above --max-request-bytes was not refused"
    with Conn(broker.bootstrap) as c:
        c.send_raw(struct.pack(">i", 0x7FFFFFFF))
        assert c.is_closed()
    with Conn(broker.bootstrap) as c:
        c.send_raw(struct.pack(">i", -5))  # a negative size
        assert c.is_closed()
    # A request just under the limit is still served (a produce of ~0.9 MiB).
    with Conn(broker.bootstrap) as c:
        err, base = c.produce("big-frame", 0, kwire.record_batch([b"x" * 900_000]))
        assert (err, base) == (kwire.NONE, 2)
    with Conn(broker.bootstrap) as c:
        assert c.api_versions()[0] == kwire.NONE
    assert broker.running()


def test_unknown_api_key_closes_or_errors(broker):
    with Conn(broker.bootstrap) as c:
        corr = c.send_request(9999, 0, b"")
        try:
            r = c.recv_response(corr)
        except kwire.Closed:
            pass  # Kafka's own answer: close the connection.
        else:
            assert r.i16() != kwire.NONE, "an unknown API key was answered with success"
    with Conn(broker.bootstrap) as c:
        assert c.api_versions()[0] == kwire.NONE
    assert broker.running()


def test_api_versions_at_an_unknown_version_answers_v0_with_unsupported_version(broker):
    with Conn(broker.bootstrap) as c:
        corr = c.send_request(kwire.API_VERSIONS, 999, b"\x00garbage-body")
        r = c.recv_response(corr)
        assert r.i16() == kwire.UNSUPPORTED_VERSION
        keys = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
        advertised = {k: (lo, hi) for k, lo, hi in keys}
        assert advertised.get(kwire.API_VERSIONS, (99, -1))[0] == 0, "ApiVersions v0 must be listed"
        # The connection is still usable: ask again at a version the broker knows.
        err, _ = c.api_versions(2)
        assert err == kwire.NONE


def test_api_versions_advertises_what_old_librdkafka_checks(broker):
    """librdkafka < 2.11.1 disables compression unless Produce/Fetch ranges include v2 (KAFKA-18659)."""
    with Conn(broker.bootstrap) as c:
        err, v = c.api_versions(2)
    assert err == kwire.NONE
    for key in (kwire.PRODUCE, kwire.FETCH):
        lo, hi = v[key]
        assert lo <= 2 and hi >= 7, f"api {key} advertises {lo}..{hi}"
    for key in (kwire.METADATA, kwire.LIST_OFFSETS, kwire.CREATE_TOPICS, kwire.API_VERSIONS):
        assert key in v, f"api {key} not advertised"


def test_unsupported_produce_version_writes_nothing(broker):
    setup_topic(broker, "old-produce")
    with Conn(broker.bootstrap) as c:
        # Produce v2 carries message sets of magic 0/1 (converted at the door); a v2 batch
        # in it is INVALID_RECORD, as Kafka answered, and nothing is written.
        body = struct.pack(">hi", -1, 5000) + struct.pack(">i", 1) + kwire.kstring("old-produce")
        body += struct.pack(">i", 1) + struct.pack(">i", 0) + kwire.kbytes(good_batch("v2!"))
        corr = c.send_request(kwire.PRODUCE, 2, body)
        try:
            r = c.recv_response(corr)
        except kwire.Closed:
            pass
        else:
            ((_, parts),) = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
            assert parts[0][1] == kwire.INVALID_RECORD
    with Conn(broker.bootstrap) as c:
        # A version above anything advertised: closed or UNSUPPORTED_VERSION, never a write.
        corr = c.send_request(kwire.PRODUCE, 200, b"\x00" * 16)
        try:
            r = c.recv_response(corr)
        except kwire.Closed:
            pass
    assert_serving_and_log(broker, "old-produce", ["good-0", "good-1"])


def test_produce_to_a_missing_topic_without_auto_create(broker_factory):
    broker = broker_factory(auto_create_topics=False)
    with Conn(broker.bootstrap) as c:
        err, _ = c.produce("nope", 0, good_batch("lost"))
        assert err == kwire.UNKNOWN_TOPIC_OR_PARTITION
        md = c.metadata(["nope"], allow_auto_topic_creation=True)
        assert md["nope"][0] == kwire.UNKNOWN_TOPIC_OR_PARTITION
        # Still not there, and a partition beyond an existing topic's count is unknown too.
        assert c.metadata(["nope"])["nope"][0] == kwire.UNKNOWN_TOPIC_OR_PARTITION
        assert c.create_topic("exists", 1) == kwire.NONE
        assert c.produce("exists", 5, good_batch("lost"))[0] == kwire.UNKNOWN_TOPIC_OR_PARTITION
        assert c.produce("exists", 0, good_batch("kept")) == (kwire.NONE, 0)
    assert_serving_and_log(broker, "exists", ["kept"])


def test_auto_create_on_metadata_when_enabled(broker_factory):
    broker = broker_factory(num_partitions=3)
    with Conn(broker.bootstrap) as c:
        md = c.metadata(["auto-made"], allow_auto_topic_creation=True)
        err, parts = md["auto-made"]
        if err != kwire.NONE:  # Kafka may answer LEADER_NOT_AVAILABLE once while creating
            md = c.metadata(["auto-made"])
            err, parts = md["auto-made"]
        assert (err, parts) == (kwire.NONE, 3)


def test_batch_above_max_message_bytes_is_message_too_large(broker):
    with Conn(broker.bootstrap) as c:
        assert c.create_topic("small-msgs", 1, {"max.message.bytes": 1024}) == kwire.NONE
        assert c.produce("small-msgs", 0, good_batch("fits")) == (kwire.NONE, 0)
        big = kwire.record_batch([b"y" * 2000])
        assert c.produce("small-msgs", 0, big)[0] == kwire.MESSAGE_TOO_LARGE
        assert c.produce("small-msgs", 0, good_batch("fits too")) == (kwire.NONE, 1)
    assert_serving_and_log(broker, "small-msgs", ["fits", "fits too"])


def test_many_bad_clients_do_not_disturb_a_good_one(broker):
    setup_topic(broker, "mixed")
    good = Conn(broker.bootstrap)
    try:
        for i in range(20):
            with Conn(broker.bootstrap) as bad:
                bad.send_raw(struct.pack(">i", 12) + b"\xff" * 12)
                bad.is_closed(timeout=2)
            assert good.produce("mixed", 0, good_batch(f"g{i}")) == (kwire.NONE, 2 + i)
    finally:
        good.close()
    assert_serving_and_log(broker, "mixed", ["good-0", "good-1"] + [f"g{i}" for i in range(20)])
