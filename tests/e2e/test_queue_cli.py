"""`strom queue consume` and `strom group describe` of share groups (issue 13) against a real
`strom serve`, cross-checked with confluent-kafka (librdkafka 2.16): its ShareConsumer is a
member of the same share group, its Producer writes, its Consumer reads the dead-letter topic.

The CLI's share consumer is strom-client's own (`strom_client::share`): ShareGroupHeartbeat,
ShareFetch in a share session with piggy-backed acknowledgements, ShareAcknowledge at close.
"""

import json
import subprocess
import threading
import time

import pytest
from confluent_kafka import AcknowledgeType, Consumer, Producer, ShareConsumer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

from test_cli import CLI, run

pytestmark = pytest.mark.timeout(240)


def create_topic(broker, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(20)


def set_group_configs(broker, group, **configs):
    res = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(k.replace("_", "."), str(v), incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.incremental_alter_configs([res]).values():
        f.result(20)


def produce(broker, topic, n, prefix="m"):
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, value=f"{prefix}{i}".encode(), key=f"k{i}".encode(), headers=[("h", b"v")])
    assert p.flush(30) == 0


def share_consumer(broker, group, topic, **conf):
    c = ShareConsumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                       **{k.replace("_", "."): v for k, v in conf.items()}})
    c.subscribe([topic])
    return c


def poll_records(c, timeout=1.0):
    return [m for m in c.poll(timeout) if m.error() is None]


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_queue_consume_shares_one_partition_with_a_confluent_share_consumer(broker):
    topic, group, n = "qjobs", "qworkers", 400
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, n)
    # Both members at once: the CLI and librdkafka's ShareConsumer, each accepting what it gets.
    cli = subprocess.Popen([CLI, "queue", "consume", group, topic, "--format", "json",
                            "--max-records", "10", "--idle-exit-ms", "4000",
                            "--bootstrap", broker.bootstrap],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    theirs = []
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit",
                       max_poll_records=10)
    try:
        idle_since = time.time()
        while time.time() - idle_since < 4:
            ms = poll_records(c, 0.5)
            if ms:
                idle_since = time.time()
            for m in ms:
                theirs.append(m.offset())
                assert m.delivery_count() == 1
                c.acknowledge(m, AcknowledgeType.ACCEPT)
                time.sleep(0.002)  # slow work, so that the CLI gets its share
            c.commit_sync(30)
    finally:
        c.close()
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    ours = json_lines(out)
    assert all(r["topic"] == topic and r["partition"] == 0 and r["delivery_count"] == 1 for r in ours)
    assert all(r["value"] == f"m{r['offset']}" and r["key"] == f"k{r['offset']}"
               and r["headers"] == {"h": "v"} for r in ours)
    mine = [r["offset"] for r in ours]
    assert not set(mine) & set(theirs), "a record went to both members"
    assert sorted(mine + theirs) == list(range(n)), f"{len(mine)} + {len(theirs)} of {n}"
    assert mine and theirs, (len(mine), len(theirs))
    assert f"{len(mine)} record(s): {len(mine)} accepted" in err
    # Every record accepted: a new member gets nothing.
    c = share_consumer(broker, group, topic)
    try:
        assert [m.offset() for _ in range(3) for m in poll_records(c, 1.0)] == []
    finally:
        c.close()


def test_max_messages_takes_exactly_n_and_the_rest_stays_for_the_group(broker):
    topic, group = "qmax", "qmax-g"
    create_topic(broker, topic)
    produce(broker, topic, 30)
    # --from-beginning sets the group's share.auto.offset.reset to earliest.
    p = run(broker, "queue", "consume", group, topic, "--from-beginning", "--max-messages", "7")
    assert p.stdout.splitlines() == [f"m{i}" for i in range(7)]
    d = json.loads(run(broker, "group", "describe", group, "--json").stdout)
    assert d["configs"]["share.auto.offset.reset"] == "earliest"
    assert d["partitions"] == [dict(d["partitions"][0], topic=topic, partition=0, start_offset=7,
                                    end_offset=30, lag=23)]
    # librdkafka's member gets the other 23, each delivered for the first time... or, for those
    # the CLI fetched past its 7 and released, the second.
    c = share_consumer(broker, group, topic)
    got = {}
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(got) < 23:
            for m in poll_records(c, 1.0):
                got[m.offset()] = m.delivery_count()
    finally:
        c.close()
    assert sorted(got) == list(range(7, 30))
    assert set(got.values()) <= {1, 2}


def test_release_redelivers_to_the_other_member_with_a_higher_delivery_count(broker):
    topic, group = "qrel", "qrel-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 5)
    first = json_lines(run(broker, "queue", "consume", group, topic, "--ack", "release",
                           "--max-messages", "5", "--format", "json").stdout)
    assert [(r["offset"], r["delivery_count"]) for r in first] == [(i, 1) for i in range(5)]
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit")
    got = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(got) < 5:
            for m in poll_records(c, 1.0):
                got.append((m.offset(), m.delivery_count()))
                c.acknowledge(m, AcknowledgeType.RELEASE)
            c.commit_sync(30)
    finally:
        c.close()
    assert sorted(got) == [(i, 2) for i in range(5)]
    # And back to the CLI at the third delivery, which accepts.
    third = json_lines(run(broker, "queue", "consume", group, topic, "--max-messages", "5",
                           "--format", "json").stdout)
    assert [(r["offset"], r["delivery_count"]) for r in third] == [(i, 3) for i in range(5)]
    d = json.loads(run(broker, "group", "describe", group, "--json").stdout)
    assert d["partitions"][0]["start_offset"] == 5 and d["partitions"][0]["lag"] == 0


def test_reject_dead_letters_and_describe_shows_members_offsets_and_the_dlq(broker):
    topic, group, dlq = "qorders", "qorders-g", "qorders-dlq"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest",
                      errors_deadletterqueue_topic_name=dlq)
    produce(broker, topic, 10)
    p = run(broker, "queue", "consume", group, topic, "--ack", "reject", "--max-messages", "3")
    assert p.stdout.splitlines() == ["m0", "m1", "m2"]
    assert "3 rejected" in p.stderr
    # The dead letters, as a plain Kafka consumer reads them.
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "qdlq-reader",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    reader.subscribe([dlq])
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and len(got) < 3:
        m = reader.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    reader.close()
    assert sorted(got) == [b"m0", b"m1", b"m2"]
    # A live librdkafka member, then describe: type, member, offsets, the DLQ's size.
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit",
                       client_id="lib-member", max_poll_records=1)
    held = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not held:
            held = poll_records(c, 1.0)
        assert held, "the librdkafka member got nothing"
        d = json.loads(run(broker, "group", "describe", group, "--json").stdout)
        assert d["type"] == "share" and d["state"] == "Stable"
        assert [m["client_id"] for m in d["members"]] == ["lib-member"]
        assert d["members"][0]["assignment"] == {topic: [0]}
        part = d["partitions"][0]
        assert (part["topic"], part["partition"], part["start_offset"], part["end_offset"]) == (topic, 0, 3, 10)
        assert part["lag"] == 7
        assert d["dead_letter"] == {"topic": dlq, "records": 3}
        assert d["configs"]["errors.deadletterqueue.topic.name"] == dlq
        table = run(broker, "group", "describe", group).stdout
        assert f"group {group}: type share, state Stable" in table
        assert "lib-member" in table and f"dead-letter topic {dlq}: 3 record(s)" in table
        listed = json.loads(run(broker, "group", "list", "--json").stdout)
        assert {"group": group, "type": "share", "protocol_type": "share", "state": "Stable"} in listed
        for m in held:
            c.acknowledge(m, AcknowledgeType.ACCEPT)
        c.commit_sync(30)
    finally:
        c.close()


def test_two_cli_members_split_the_records_and_describe_still_knows_classic_groups(broker):
    topic, group, n = "qtwo", "qtwo-g", 200
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, n)
    procs = [subprocess.Popen([CLI, "queue", "consume", group, topic, "--format", "json",
                               "--max-records", "5", "--idle-exit-ms", "3000",
                               "--bootstrap", broker.bootstrap],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    offsets = [[r["offset"] for r in json_lines(o)] for o, _ in outs]
    assert sorted(offsets[0] + offsets[1]) == list(range(n))
    # A classic group is described as before.
    run(broker, "consume", topic, "--group", "classic-g", "--from-beginning", "--count", "5")
    d = json.loads(run(broker, "group", "describe", "classic-g", "--json").stdout)
    assert d["protocol_type"] == "consumer" and d["offsets"][0]["committed"] == 5
    kinds = {g["group"]: g["type"] for g in json.loads(run(broker, "group", "list", "--json").stdout)}
    assert kinds[group] == "share" and kinds["classic-g"] == "classic"


def test_bad_input_is_one_line_and_an_error_exit(broker):
    create_topic(broker, "qbad")
    for args, needle in [
        (("queue", "consume", "g", "no-such-topic"), "UNKNOWN_TOPIC_OR_PARTITION"),
        (("queue", "consume", "g", "qbad", "--ack", "maybe"), "accept, release or reject"),
        (("queue", "consume", "g", "qbad", "--format", "xml"), "unknown format"),
        (("queue", "consume", "g", "qbad", "--max-records", "0"), "--max-records"),
    ]:
        p = run(broker, *args, ok=False, timeout=30)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    # A share group id that a classic group already holds.
    run(broker, "consume", "qbad", "--group", "taken", "--count", "0", "--idle-exit-ms", "500")
    p = run(broker, "queue", "consume", "taken", "qbad", "--max-messages", "1", ok=False, timeout=30)
    assert p.returncode != 0 and "ShareGroupHeartbeat taken" in p.stderr, p.stderr


def test_describe_with_the_http_door_shows_in_flight_and_redeliveries(broker_factory):
    broker = broker_factory(http=True)
    topic, group = "qhttp", "qhttp-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 20)
    # 4 released once (redelivered later), then a librdkafka member holds 5 records acquired.
    run(broker, "queue", "consume", group, topic, "--ack", "release", "--max-messages", "4")
    c = share_consumer(broker, group, topic, share_acknowledgement_mode="explicit",
                       max_poll_records=5)
    held = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not held:
            held = poll_records(c, 1.0)
        assert held
        http = f"127.0.0.1:{broker.http_port}"
        d = json.loads(run(broker, "group", "describe", group, "--json", "--http", http).stdout)
        part = d["partitions"][0]
        assert part["acquired"] == len(held), part
        assert part["in_flight"] >= len(held) and part["available"] >= 0
        assert part["redeliveries"] >= 1 and part["dead_lettered"] == 0
        assert part["start_offset"] == 0 and part["end_offset"] == 20 and part["lag"] == 20
        table = run(broker, "group", "describe", group, "--http", http).stdout
        assert "IN-FLIGHT" in table and "(in-flight counts" not in table
        # Without --http the table says where the counts are.
        assert "(in-flight counts: give --http" in run(broker, "group", "describe", group).stdout
        for m in held:
            c.acknowledge(m, AcknowledgeType.ACCEPT)
        c.commit_sync(30)
    finally:
        c.close()
    # An HTTP door that does not answer is one error line.
    p = run(broker, "group", "describe", group, "--http", "127.0.0.1:1", ok=False)
    assert p.returncode != 0 and "cannot connect" in p.stderr


def test_bench_share_group_accepts_every_record_and_times_redeliveries(broker):
    p = run(broker, "bench", "--json", "--share-group", "bsg", "--topic", "bsq", "--consumers", "4",
            "--messages", "5000", "--message-size", "64", "--batch", "500", "--redeliveries", "20",
            "--duration-secs", "60", timeout=120)
    d = json.loads(p.stdout.strip().splitlines()[-1])
    assert d["workload"] == "share-group" and d["consumers"] == 4
    assert d["accepted"] == 5000 and d["ack_failures"] == 0, d
    assert d["acked_per_s"] > 0 and d["redelivery_latency_ms"]["count"] == 20, d
    # The broker agrees: everything accepted, in both groups; librdkafka's member gets nothing.
    for group, topic, n in [("bsg", "bsq", 5000), ("bsg-redeliver", "bsq-redeliver", 20)]:
        g = json.loads(run(broker, "group", "describe", group, "--json").stdout)
        assert [(x["start_offset"], x["lag"]) for x in g["partitions"]] == [(n, 0)], g
    c = share_consumer(broker, "bsg", "bsq")
    try:
        assert [m.offset() for _ in range(3) for m in poll_records(c, 1.0)] == []
    finally:
        c.close()


def test_the_cli_member_heartbeats_at_the_interval_the_broker_says(broker):
    """share.session.timeout.ms 3 s, share.heartbeat.interval.ms 1 s: a member that beat at
    the broker's default interval (5 s) would be dropped; the CLI stays a member for 8 s."""
    topic, group = "qbeat", "qbeat-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_session_timeout_ms=3000, share_heartbeat_interval_ms=1000)
    cli = subprocess.Popen([CLI, "queue", "consume", group, topic, "--max-messages", "3",
                            "--idle-exit-ms", "30000",
                            "--bootstrap", broker.bootstrap],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        members = []
        for _ in range(8):
            time.sleep(1)
            d = json.loads(run(broker, "group", "describe", group, "--json").stdout)
            members.append([m["client_id"] for m in d["members"]])
        assert members[1:] == [["strom-queue"]] * 7, members
        produce(broker, topic, 3)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, err
        assert out.splitlines() == ["m0", "m1", "m2"]
    finally:
        if cli.poll() is None:
            cli.kill()
    # It left at exit: the group is empty at once (no session timeout to wait for).
    d = json.loads(run(broker, "group", "describe", group, "--json").stdout)
    assert d["members"] == [] and d["state"] == "Empty", d


def test_kill_9_of_the_broker_under_the_cli_member_loses_and_repeats_nothing(broker):
    topic, group = "qkill", "qkill-g"
    create_topic(broker, topic)
    set_group_configs(broker, group, share_auto_offset_reset="earliest")
    produce(broker, topic, 50)
    cli = subprocess.Popen([CLI, "queue", "consume", group, topic, "--max-records", "7",
                            "--idle-exit-ms", "60000", "--bootstrap", broker.bootstrap],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until the CLI printed all 50 (their acceptance rides on its next, waiting fetch).
    deadline = time.time() + 30
    while time.time() < deadline:
        d = json.loads(run(broker, "group", "describe", group, "--json").stdout)
        # (Until the CLI joined, the group is not a share group yet.)
        if d.get("partitions") and d["partitions"][0]["start_offset"] == 50:
            break
        time.sleep(0.2)
    broker.kill()
    out, err = cli.communicate(timeout=60)
    # The member's broker is gone: one error line, an error exit, no panic.
    assert cli.returncode == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert out.splitlines() == [f"m{i}" for i in range(50)]
    broker.start()
    produce(broker, topic, 10, prefix="after")
    # After the restart nothing accepted comes again and nothing is lost.
    c = share_consumer(broker, group, topic)
    got = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(got) < 10:
            got += [m.value() for m in poll_records(c, 1.0)]
        got += [m.value() for m in poll_records(c, 1.0)]
    finally:
        c.close()
    assert sorted(got) == sorted(f"after{i}".encode() for i in range(10)), got
