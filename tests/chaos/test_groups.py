"""Consumer-group commits across kill -9 cycles (issue 22, item 8).

Under the idempotent load of test_kill9.py, a consumer-group member (confluent-kafka, its own
process: group_member.py) consumes the topic and commits its positions every 100 ms while the
broker is SIGKILLed and restarted. After each restart the group's committed offsets, read with an
AdminClient, are never behind the last commit the member saw acknowledged before the restart,
and never beyond the partition's log end. The member keeps committing after every restart, and
the records stay intact (the final check of test_kill9.py).
"""

import random
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from chaos import (CYCLES, Load, Member, assert_load_clean, check_topic, create_topic,
                   failure_text, kill_cycles, seed)

pytestmark = pytest.mark.timeout(120 + 15 * CYCLES)

PARTITIONS = 3
GROUP = "chaos-committers"


def committed_and_ends(bootstrap, topic):
    a = AdminClient({"bootstrap.servers": bootstrap})
    req = ConsumerGroupTopicPartitions(GROUP, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    res = a.list_consumer_group_offsets([req])[GROUP].result(timeout=20)
    committed = {tp.partition: tp.offset for tp in res.topic_partitions if tp.offset >= 0}
    ends = a.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)})
    return committed, {tp.partition: f.result(timeout=20).offset for tp, f in ends.items()}


def test_group_commits_survive_kill_cycles(broker_factory, workdir, chaos_report):
    s = seed()
    rng = random.Random(s)
    b = broker_factory("--group-initial-rebalance-delay-ms", "0", http_addr="off")
    create_topic(b, "work", PARTITIONS, {})
    load = Load(workdir, b.bootstrap, "work", PARTITIONS).start()
    member = Member(workdir, b.bootstrap, GROUP, "work").start()
    checked = []  # per restart: (cycle, committed, last acknowledged commit, log ends)
    behind, beyond = [], []

    def after_restart(cycle, cycles):
        spawned = b.spawned_at
        time.sleep(0.05)  # the member writes a commit's line right after its acknowledgement
        member.poll()
        last_ok = member.last_commit_before(spawned)
        committed, ends = committed_and_ends(b.bootstrap, "work")
        checked.append((cycle, committed, last_ok, ends))
        for p, o in last_ok.items():
            if committed.get(p, -1) < o:
                behind.append((cycle, p, committed.get(p), o))
        for p, o in committed.items():
            if o > ends[p]:
                beyond.append((cycle, p, o, ends[p]))

    try:
        # The member joins and commits before the first kill.
        deadline = time.monotonic() + 60
        while not member.poll().commits:
            assert member.proc.poll() is None, f"the member exited: {member.stderr_tail()}"
            assert time.monotonic() < deadline, f"no commit acknowledged: {member.commit_errors[-5:]}"
            time.sleep(0.05)
        cycles = kill_cycles(b, load, CYCLES, rng, after_restart=after_restart)
        chaos_report["cycles"] = cycles
        chaos_report["seed"] = s
        # The member commits again after the last restart.
        last_spawn = b.spawned_at
        deadline = time.monotonic() + 60
        while not any(t > last_spawn for t, _p, _o in member.poll().commits):
            assert time.monotonic() < deadline, (f"no commit acknowledged after the last restart: "
                                                 f"{member.commit_errors[-5:]}\n{member.stderr_tail()}")
            time.sleep(0.05)
        code = load.finish()
        check = check_topic(b, load)
        chaos_report["check"] = check
        chaos_report["commits"] = len(member.commits)
        print(f"{len(member.commits)} commits acknowledged, {len(member.commit_errors)} failed, "
              f"{member.consumed} records consumed; per restart (cycle, committed, last acked, ends): "
              f"{checked[:3]}")
        assert not behind, f"committed offsets behind an acknowledged commit (cycle, partition, committed, acked): {behind[:5]}"
        assert not beyond, f"committed offsets beyond the log end (cycle, partition, committed, end): {beyond[:5]}"
        assert all(last for _c, _co, last, _e in checked), "a restart came before any commit to check"
        assert check.problems() == 0, failure_text(check, load, cycles, s)
        assert_load_clean(load, code)
    finally:
        member.stop(20)
        member.kill()
        load.kill()
