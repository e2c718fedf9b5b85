"""ACLs (issue 16, item 4): `strom serve --authorizer acl --super-users ...`, CreateAcls /
DescribeAcls / DeleteAcls, `strom acl add|list|remove` offline (`--data-dir`) and online
(`--bootstrap`), enforced per principal on the Kafka door: produce, fetch, group join and
commit, transactions, topic create/delete, Metadata hiding what a principal may not describe.
Deny by default, DENY wins, LITERAL / PREFIXED / wildcard patterns, ACLs durable across a
restart. Real clients: confluent-kafka (librdkafka) and kafka-python over SASL_PLAINTEXT with
SCRAM-SHA-512, kcat on a PLAINTEXT listener (principal User:ANONYMOUS)."""

import json
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType)

from confluent_helpers import consume_all, produce
from conftest import free_port, strom_bin

pytestmark = [pytest.mark.timeout(150)]

PASSWORD = "acl-pa55-W0rd"
needs_kcat = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def cli(*args, password=None, timeout=60):
    return subprocess.run([strom_bin(), *map(str, args)], capture_output=True, timeout=timeout,
                          input=(password + "\n").encode() if password is not None else None)


@pytest.fixture
def secured(broker_factory):
    """PLAINTEXT (User:ANONYMOUS) and SASL_PLAINTEXT listeners, the ACL authorizer on,
    User:admin a super user; admin, alice and bob created offline before the first start."""
    p1, p2 = free_port(), free_port()
    while p2 == p1:
        p2 = free_port()
    b = broker_factory("--authorizer", "acl", "--super-users", "User:admin;User:ops", start=False,
                       listeners=f"PLAINTEXT://127.0.0.1:{p1},SASL_PLAINTEXT://127.0.0.1:{p2}",
                       group_initial_rebalance_delay_ms=0)
    for name in ("admin", "alice", "bob"):
        p = cli("user", "set", name, "--mechanism", "SCRAM-SHA-512", "--password-stdin",
                "--data-dir", b.data_dir, password=PASSWORD)
        assert p.returncode == 0, p.stderr
    b.start()
    b.sasl = f"127.0.0.1:{p2}"
    return b


def conf(user):
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user, "sasl.password": PASSWORD}


def admin(b, user="admin"):
    return AdminClient({"bootstrap.servers": b.sasl, **conf(user)})


def create_topics(b, *names):
    a = admin(b)  # kept alive until the futures are done
    for f in a.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        f.result(30)


def add_acls(b, *bindings):
    a = admin(b)
    for f in a.create_acls(list(bindings)).values():
        f.result(30)


def allow(rt, name, user, op, pattern=ResourcePatternType.LITERAL, perm=AclPermissionType.ALLOW):
    return AclBinding(rt, name, pattern, f"User:{user}", "*", op, perm)


def delivery_errors(bootstrap, topic, values, **c):
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000, "acks": "all", **c})
    for v in values:
        p.produce(topic, v, on_delivery=lambda e, m: errors.append(e))
    p.flush(20)
    return errors


def test_acl_apis_cli_and_durability(secured):
    b = secured
    a = admin(b)
    add_acls(b,
             allow(ResourceType.TOPIC, "orders", "alice", AclOperation.WRITE),
             allow(ResourceType.TOPIC, "logs-", "alice", AclOperation.READ, ResourcePatternType.PREFIXED),
             allow(ResourceType.GROUP, "*", "bob", AclOperation.READ, perm=AclPermissionType.DENY))
    found = a.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                             AclOperation.ANY, AclPermissionType.ANY)).result(30)
    assert len(found) == 3
    # MATCH: every binding that applies to the topic logs-app (here the prefix).
    matching = a.describe_acls(AclBindingFilter(ResourceType.TOPIC, "logs-app", ResourcePatternType.MATCH,
                                                None, None, AclOperation.ANY,
                                                AclPermissionType.ANY)).result(30)
    assert [(m.name, m.resource_pattern_type) for m in matching] == [("logs-", ResourcePatternType.PREFIXED)]
    # A principal without ALTER on the cluster may not change ACLs, nor list them.
    al = admin(b, "alice")
    mine = allow(ResourceType.TOPIC, "*", "alice", AclOperation.ALL)
    with pytest.raises(KafkaException) as e:
        al.create_acls([mine])[mine].result(30)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # The CLI online from the PLAINTEXT listener is User:ANONYMOUS: refused, with the code.
    p = cli("acl", "list", "--bootstrap", b.bootstrap)
    assert p.returncode == 1 and b"error 31" in p.stderr, p.stderr
    # A bad binding is refused with INVALID_REQUEST, nothing stored.
    bad = AclBinding(ResourceType.BROKER, "not-the-cluster", ResourcePatternType.LITERAL, "User:x", "*",
                     AclOperation.ALTER, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        a.create_acls([bad])[bad].result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
    # Durable: a restart keeps them; the offline CLI reads the same store.
    b.restart()
    a = admin(b)
    found = a.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None,
                                                    None, AclOperation.ANY, AclPermissionType.ANY)).result(30)
    assert len(found) == 3
    p = cli("acl", "list", "--data-dir", b.data_dir, "--json")
    assert p.returncode == 0, p.stderr
    assert {(x["resource_name"], x["operation"]) for x in json.loads(p.stdout)} == {
        ("orders", "WRITE"), ("logs-", "READ"), ("*", "READ")}
    # DeleteAcls removes what its filter selects.
    gone = a.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                                                  "User:alice", None, AclOperation.ANY,
                                                  AclPermissionType.ANY)])
    assert sum(len(f.result(30)) for f in gone.values()) == 2
    p = cli("acl", "list", "--data-dir", b.data_dir, "--json")
    assert [x["principal"] for x in json.loads(p.stdout)] == ["User:bob"]


def test_produce_fetch_groups_and_metadata_per_principal(secured):
    b = secured
    create_topics(b, "orders", "secret")
    add_acls(b,
             allow(ResourceType.TOPIC, "orders", "alice", AclOperation.WRITE),
             allow(ResourceType.TOPIC, "orders", "alice", AclOperation.READ),
             allow(ResourceType.GROUP, "g-", "alice", AclOperation.READ, ResourcePatternType.PREFIXED))
    produce(b.sasl, "orders", [b"o1", b"o2", b"o3"], **conf("alice"))
    assert sorted(consume_all(b.sasl, "orders", 3, commit=True, **conf("alice"))) == [b"o1", b"o2", b"o3"]
    # No ACL: denied by default, with TOPIC_AUTHORIZATION_FAILED; nothing is written.
    errs = delivery_errors(b.sasl, "secret", [b"x"], **conf("alice"))
    assert [e.code() for e in errs] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    errs = delivery_errors(b.sasl, "orders", [b"x"], **conf("bob"))
    assert [e.code() for e in errs] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # Metadata shows alice the topics she may describe (WRITE/READ imply DESCRIBE), only.
    listed = set(admin(b, "alice").list_topics(timeout=20).topics)
    assert "orders" in listed and "secret" not in listed
    assert {"orders", "secret"} <= set(admin(b).list_topics(timeout=20).topics)
    # DENY wins over ALLOW: alice may no longer read orders.
    add_acls(b, allow(ResourceType.TOPIC, "orders", "alice", AclOperation.READ, perm=AclPermissionType.DENY))
    time.sleep(0.2)
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": b.sasl, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                  **conf("alice")})
    c.subscribe(["orders"])
    errors, got, deadline = [], [], time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None:
            (errors if m.error() else got).append(m.error() or m.value())
    c.close()
    assert got == [] and errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors
    # The group: bob may read orders but not the group.
    add_acls(b, allow(ResourceType.TOPIC, "orders", "bob", AclOperation.READ))
    c = Consumer({"bootstrap.servers": b.sasl, "group.id": "bobs", "auto.offset.reset": "earliest",
                  **conf("bob")})
    c.subscribe(["orders"])
    errors, deadline = [], time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error():
            errors.append(m.error())
    c.close()
    assert errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, errors
    # Everything alice was allowed is still there, nothing refused was written.
    assert sorted(consume_all(b.sasl, "orders", 3, **conf("admin"))) == [b"o1", b"o2", b"o3"]
    assert consume_all(b.sasl, "secret", 1, **conf("admin")) == []


def test_topic_create_delete_and_transactions(secured):
    b = secured
    al = admin(b, "alice")
    with pytest.raises(KafkaException) as e:
        al.create_topics([NewTopic("alice-1", 1, 1)])["alice-1"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    add_acls(b, allow(ResourceType.TOPIC, "alice-", "alice", AclOperation.CREATE, ResourcePatternType.PREFIXED),
             allow(ResourceType.TOPIC, "alice-", "alice", AclOperation.WRITE, ResourcePatternType.PREFIXED))
    al.create_topics([NewTopic("alice-1", 1, 1)])["alice-1"].result(30)
    with pytest.raises(KafkaException) as e:
        al.delete_topics(["alice-1"])["alice-1"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Transactions need WRITE on the transactional id.
    p = Producer({"bootstrap.servers": b.sasl, "transactional.id": "tx-alice", **conf("alice")})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(20)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    add_acls(b, allow(ResourceType.TRANSACTIONAL_ID, "tx-", "alice", AclOperation.WRITE,
                      ResourcePatternType.PREFIXED))
    time.sleep(0.2)
    p = Producer({"bootstrap.servers": b.sasl, "transactional.id": "tx-alice", **conf("alice")})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("alice-1", b"t1")
    p.commit_transaction(20)
    assert consume_all(b.sasl, "alice-1", 1, **conf("admin"), **{"isolation.level": "read_committed"}) == [b"t1"]
    # Deleting works once allowed.
    add_acls(b, allow(ResourceType.TOPIC, "alice-1", "alice", AclOperation.DELETE))
    al.delete_topics(["alice-1"])["alice-1"].result(30)


def test_share_groups_need_read_on_the_group(secured):
    from confluent_kafka import ShareConsumer
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    b = secured
    create_topics(b, "jobs")
    produce(b.sasl, "jobs", [b"j1", b"j2", b"j3"], **conf("admin"))
    res = ConfigResource(ResourceType.GROUP, "workers", incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
    a = admin(b)
    for f in a.incremental_alter_configs([res]).values():
        f.result(20)
    add_acls(b, allow(ResourceType.TOPIC, "jobs", "alice", AclOperation.READ))

    def share_poll(seconds):
        c = ShareConsumer({"bootstrap.servers": b.sasl, "group.id": "workers", **conf("alice")})
        c.subscribe(["jobs"])
        got, errors, deadline = [], [], time.monotonic() + seconds
        while len(got) < 3 and not errors and time.monotonic() < deadline:
            try:
                for m in c.poll(0.5):
                    (errors if m.error() else got).append(m.error() or m.value())
            except KafkaException as e:  # the ShareConsumer raises a refused coordinator lookup
                errors.append(e.args[0])
        c.close()
        return got, errors

    # READ on the topic is not enough: the share group needs READ too.
    got, errors = share_poll(15)
    assert got == [] and errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, errors
    add_acls(b, allow(ResourceType.GROUP, "workers", "alice", AclOperation.READ))
    time.sleep(0.2)
    got, errors = share_poll(30)
    assert sorted(got) == [b"j1", b"j2", b"j3"] and errors == [], (got, errors)


def test_kafka_python_is_refused_and_allowed(secured):
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError
    b = secured
    create_topics(b, "kp")
    kp = dict(bootstrap_servers=b.sasl, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
              sasl_plain_username="bob", sasl_plain_password=PASSWORD)
    p = KafkaProducer(**kp, max_block_ms=10000)
    with pytest.raises(TopicAuthorizationFailedError):
        p.send("kp", b"no").get(timeout=20)
    p.close()
    add_acls(b, allow(ResourceType.TOPIC, "kp", "bob", AclOperation.WRITE))
    time.sleep(0.2)
    p = KafkaProducer(**kp)
    md = p.send("kp", b"yes").get(timeout=20)
    assert md.offset == 0
    p.close()
    # kafka-python's admin client: DescribeAcls (it used to drop the connection), CreateAcls
    # and DeleteAcls, as the super user.
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             KafkaAdminClient, ResourcePattern, ResourcePatternFilter, ResourceType as KRT)
    ka = KafkaAdminClient(**{**kp, "sasl_plain_username": "admin"}, request_timeout_ms=20000)
    try:
        any_topic = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                              permission_type=ACLPermissionType.ANY,
                              resource_pattern=ResourcePatternFilter(KRT.TOPIC, None, ACLResourcePatternType.ANY))
        found, err = ka.describe_acls(any_topic)
        assert err is kafka_no_error() and [(a.principal, a.resource_pattern.resource_name) for a in found] \
            == [("User:bob", "kp")]
        read = ACL("User:bob", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                   ResourcePattern(KRT.TOPIC, "kp-out", ACLResourcePatternType.LITERAL))
        created = ka.create_acls([read])
        assert created["failed"] == [] and len(created["succeeded"]) == 1
        found, _ = ka.describe_acls(any_topic)
        assert {a.resource_pattern.resource_name for a in found} == {"kp", "kp-out"}
        deleted = ka.delete_acls([ACLFilter(principal="User:bob", host="*", operation=ACLOperation.READ,
                                            permission_type=ACLPermissionType.ALLOW,
                                            resource_pattern=ResourcePatternFilter(
                                                KRT.TOPIC, "kp-out", ACLResourcePatternType.LITERAL))])
        ((_, matches, derr),) = deleted
        assert derr is kafka_no_error() and [m.resource_pattern.resource_name for m in matches] == ["kp-out"]
        found, _ = ka.describe_acls(any_topic)
        assert [a.resource_pattern.resource_name for a in found] == ["kp"]
    finally:
        ka.close()


def kafka_no_error():
    from kafka.errors import NoError
    return NoError


@needs_kcat
def test_offline_acls_for_anonymous_before_the_first_start(broker_factory):
    """The way an operator opens a PLAINTEXT listener to anonymous clients for one topic:
    `strom acl add --data-dir` before the broker starts."""
    b = broker_factory("--authorizer", "acl", start=False)
    p = cli("acl", "add", "--data-dir", b.data_dir, "--allow-principal", "User:ANONYMOUS",
            "--operation", "Write", "--operation", "Read", "--operation", "Create", "--topic", "open")
    assert p.returncode == 0, p.stderr
    b.start()
    p = subprocess.run(["kcat", "-P", "-b", b.bootstrap, "-t", "open"], input=b"a\nb\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["kcat", "-C", "-b", b.bootstrap, "-t", "open", "-e", "-o", "beginning"],
                       capture_output=True, timeout=60)
    assert p.stdout.split() == [b"a", b"b"], p.stderr
    p = subprocess.run(["kcat", "-P", "-b", b.bootstrap, "-t", "closed"], input=b"x\n",
                       capture_output=True, timeout=60)
    assert b"authoriz" in p.stderr.lower() or p.returncode != 0, p.stderr
    # Removing it closes the topic again (the running broker re-reads the file).
    p = cli("acl", "remove", "--data-dir", b.data_dir, "--allow-principal", "User:ANONYMOUS",
            "--operation", "Write", "--topic", "open")
    assert p.returncode == 0 and b"1 ACL(s) removed" in p.stderr, p.stderr
    time.sleep(1.2)
    errs = delivery_errors(b.bootstrap, "open", [b"late"])
    assert [e.code() for e in errs] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
