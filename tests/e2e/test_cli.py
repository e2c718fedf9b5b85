"""The client command line (issue 6) against a real `strom serve`.

The CLI is the `strom` binary (scripts/test sets STROM_CLI to it; `strom-cli` has the same
commands without `serve`).
librdkafka (confluent-kafka) is used as the independent client to cross-check.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]


def cli_path():
    if os.environ.get("STROM_CLI"):
        return os.environ["STROM_CLI"]
    for prof in ("release", "debug"):
        p = ROOT / "target" / prof / "strom-cli"
        if p.exists():
            return str(p)
    subprocess.run(["cargo", "build", "-q", "-p", "strom-client"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "strom-cli")


CLI = cli_path()


def run(broker, *args, stdin=None, ok=True, timeout=60):
    env = dict(os.environ, STROM_BOOTSTRAP=broker.bootstrap)
    p = subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
    if ok:
        assert p.returncode == 0, f"{args}: {p.stderr}"
    return p


def test_topic_lifecycle(broker):
    run(broker, "topic", "create", "cli-t", "--partitions", "3", "--config", "retention.ms=3600000")
    out = json.loads(run(broker, "topic", "list", "--json").stdout)
    assert {"topic": "cli-t", "partitions": 3, "internal": False} in out
    d = json.loads(run(broker, "topic", "describe", "cli-t", "--json").stdout)
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2]
    assert all(p["high_watermark"] == 0 for p in d["partitions"])
    assert d["configs"].get("retention.ms") == "3600000"
    again = run(broker, "topic", "create", "cli-t", ok=False)
    assert again.returncode != 0 and "TOPIC_ALREADY_EXISTS" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    run(broker, "topic", "delete", "cli-t")
    assert "cli-t" not in run(broker, "topic", "list").stdout


def test_produce_consume_plain_and_json_with_keys(broker):
    run(broker, "topic", "create", "cli-pc", "--partitions", "4")
    lines = "".join(f"k{i}:value-{i}\n" for i in range(200))
    p = run(broker, "produce", "cli-pc", "--key-separator", ":", "-H", "src=cli", stdin=lines)
    assert "produced 200 record(s)" in p.stderr
    plain = run(broker, "consume", "cli-pc", "--from-beginning", "--count", "200").stdout.splitlines()
    assert sorted(plain) == sorted(f"value-{i}" for i in range(200))
    recs = [json.loads(l) for l in run(broker, "consume", "cli-pc", "--from-beginning", "-n", "200",
                                       "--format", "json").stdout.splitlines()]
    assert len(recs) == 200
    for r in recs:
        assert r["topic"] == "cli-pc" and r["headers"] == {"src": "cli"}
        assert r["value"] == "value-" + r["key"][1:]
    # Same key -> same partition as librdkafka's murmur2 partitioner (Java-compatible).
    prod = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    for i in range(200):
        prod.produce("cli-pc", key=f"k{i}", value=b"x")
    assert prod.flush(30) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-check", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("cli-pc", p, 0) for p in range(4)])
    ours = {r["key"]: r["partition"] for r in recs}
    seen = 0
    while seen < 400:
        m = c.poll(10)
        assert m is not None, "timed out reading back"
        assert not m.error()
        seen += 1
        assert ours[m.key().decode()] == m.partition()
    c.close()


def test_consume_by_offset_and_timestamp(broker):
    run(broker, "topic", "create", "cli-off")
    run(broker, "produce", "cli-off", stdin="".join(f"m{i}\n" for i in range(10)))
    out = run(broker, "consume", "cli-off", "--offset", "7", "--count", "3").stdout.split()
    assert out == ["m7", "m8", "m9"]
    recs = [json.loads(l) for l in run(broker, "consume", "cli-off", "--from-beginning", "-n", "10",
                                       "--format", "json").stdout.splitlines()]
    ts = recs[0]["timestamp"]
    out = run(broker, "consume", "cli-off", "--timestamp", str(ts), "--count", "10").stdout.split()
    assert out[0] == "m0" and len(out) == 10


def test_group_describe_reset_delete(broker):
    run(broker, "topic", "create", "cli-g", "--partitions", "2")
    run(broker, "produce", "cli-g", stdin="".join(f"a{i}\n" for i in range(20)))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-grp",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["cli-g"])
    got = 0
    while got < 20:
        m = c.poll(10)
        assert m is not None
        if not m.error():
            got += 1
    c.commit(asynchronous=False)
    groups = json.loads(run(broker, "group", "list", "--json").stdout)
    assert any(g["group"] == "cli-grp" for g in groups)
    d = json.loads(run(broker, "group", "describe", "cli-grp", "--json").stdout)
    assert len(d["members"]) == 1
    assert sum(o["committed"] for o in d["offsets"]) == 20 and all(o["lag"] == 0 for o in d["offsets"])
    c.close()
    run(broker, "group", "reset-offsets", "cli-grp", "--topic", "cli-g", "--to-earliest")
    d = json.loads(run(broker, "group", "describe", "cli-grp", "--json").stdout)
    assert sum(o["lag"] for o in d["offsets"]) == 20
    run(broker, "group", "delete", "cli-grp")
    assert "cli-grp" not in run(broker, "group", "list").stdout


def test_errors_are_one_line(broker):
    p = run(broker, "consume", "no-such-topic", "--count", "1", ok=False)
    assert p.returncode != 0 and "UNKNOWN_TOPIC_OR_PARTITION" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([CLI, "topic", "list", "--bootstrap", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and p.stderr.startswith("error: cannot connect to 127.0.0.1:1")


def test_bench_json(broker):
    p = run(broker, "bench", "--json", "--topic", "cli-bench", "--duration-secs", "2", "--warmup-secs", "1",
            "--message-size", "1024", "--rate", "5000", "--batch", "50", timeout=120)
    r = json.loads(p.stdout)
    assert 4000 < r["produce_msgs_per_s"] < 6000
    assert r["produce_mb_per_s"] > 3
    assert r["consume_mb_per_s"] > 3
    e = r["e2e_latency_ms"]
    assert 0 < e["p50"] <= e["p99"] <= e["p999"] <= e["max"]
    assert e["count"] > 5000


def test_consume_as_group_members_share_partitions_and_commit(broker_factory):
    """`strom consume --group`: two CLI members split the partitions; offsets are committed."""
    import threading

    broker = broker_factory(group_initial_rebalance_delay_ms=1000)
    run(broker, "topic", "create", "cg", "--partitions", "4")
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(400):
        p.produce("cg", value=f"g{i}".encode(), partition=i % 4)
    assert p.flush(20) == 0
    outs = [None, None]

    def member(i):
        outs[i] = run(broker, "consume", "cg", "--group", "cli-g", "--from-beginning",
                      "--idle-exit-ms", "3000", timeout=90)

    ts = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(100)
    got = [o.stdout.split() for o in outs]
    assert sorted(got[0] + got[1]) == sorted(f"g{i}" for i in range(400)), "lost or duplicated records"
    assert got[0] and got[1], "one member got no partitions"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-g"})
    committed = c.committed([TopicPartition("cg", i) for i in range(4)], timeout=10)
    c.close()
    assert [tp.offset for tp in committed] == [100, 100, 100, 100]
    # A later member resumes from the commits: nothing old, only the new record.
    p.produce("cg", value=b"new", partition=2)
    assert p.flush(10) == 0
    again = run(broker, "consume", "cg", "--group", "cli-g", "--count", "1", timeout=60)
    assert again.stdout.split() == ["new"]


def test_bench_keyed_run_places_keys_like_kafka(broker):
    run(broker, "bench", "--json", "--topic", "bench-keyed", "--partitions", "4", "--keys", "16",
        "--batch", "50", "--duration-secs", "1", "--warmup-secs", "1", timeout=90)
    placed = {}
    for part in range(4):  # the first batch of each partition holds all of its keys
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bk", "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("bench-keyed", part, 0)])
        for m in c.consume(50, timeout=10):
            if not m.error():
                assert placed.setdefault(m.key(), m.partition()) == m.partition(), "a key in two partitions"
        c.close()
    assert len(placed) == 16
    # The same keys through librdkafka's murmur2_random partitioner (Kafka's Java default).
    p = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    expect = {}
    for k in placed:
        p.produce("bench-keyed", key=k, value=b"x", on_delivery=lambda e, m: expect.__setitem__(m.key(), m.partition()))
    assert p.flush(20) == 0
    assert expect == placed


def test_bench_linger_sends_partial_batches_at_a_fixed_rate(broker):
    """At 2000 records/s a 1000-record batch takes 500 ms to fill; --linger-ms 5 sends it
    after 5 ms, so records wait for their batch far less than a full batch's fill time."""
    p = run(broker, "bench", "--json", "--topic", "bench-linger", "--rate", "2000", "--batch", "1000",
            "--linger-ms", "5", "--duration-secs", "2", "--warmup-secs", "1", timeout=90)
    d = json.loads(p.stdout.strip().splitlines()[-1])
    assert d["linger_ms"] == 5 and d["produce_msgs_per_s"] > 0
    assert d["e2e_latency_ms"]["p50"] < 250, d["e2e_latency_ms"]


def test_bench_several_topics_and_a_message_count(broker):
    """--topics 3 spreads the run over bench-multi-0..2 (every partition gets data, checked
    through the broker with confluent-kafka); --messages stops the measured phase after that
    many acknowledged records instead of after a duration."""
    p = run(broker, "bench", "--json", "--topic", "bench-multi", "--topics", "3", "--partitions", "2",
            "--consumers", "2", "--batch", "100", "--messages", "30000", "--duration-secs", "600",
            "--warmup-secs", "1", timeout=120)
    d = json.loads(p.stdout.strip().splitlines()[-1])
    assert d["topics"] == 3 and d["partitions"] == 6
    # Producers stop within a few in-flight batches of the count; consumers read them all.
    assert 30000 <= d["messages"] <= 30000 + 8 * 100 * 2, d["messages"]
    assert d["consumed"] >= d["messages"], d
    assert d["seconds"] < 120
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bm"})
    for t in range(3):
        for part in range(2):
            lo, hi = c.get_watermark_offsets(TopicPartition(f"bench-multi-{t}", part), timeout=10)
            assert hi > 0, f"bench-multi-{t}/{part} got no records"
    c.close()


def test_bench_backlog_run_drains_what_a_producer_only_run_wrote(broker):
    """`--consumers 0` only produces; `--producers 0` then reads the topic from its start to
    its end (a backlog drain: consume throughput without a producer on the same cores)."""
    p = run(broker, "bench", "--json", "--topic", "bench-backlog", "--partitions", "2", "--consumers", "0",
            "--batch", "200", "--messages", "20000", "--warmup-secs", "0", timeout=120)
    made = json.loads(p.stdout.strip().splitlines()[-1])
    assert made["consume_mb_per_s"] == 0 and made["messages"] >= 20000
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bb"})
    total = sum(c.get_watermark_offsets(TopicPartition("bench-backlog", i), timeout=10)[1] for i in range(2))
    c.close()
    assert total >= made["messages"]
    p = run(broker, "bench", "--json", "--topic", "bench-backlog", "--producers", "0", "--consumers", "2",
            timeout=120)
    drained = json.loads(p.stdout.strip().splitlines()[-1])
    assert drained["consumed"] == total, (drained, total)
    assert drained["messages"] == 0 and drained["consume_mb_per_s"] > 0
    assert drained["e2e_latency_ms"]["count"] == 0, "a backlog's age is not reported as latency"
