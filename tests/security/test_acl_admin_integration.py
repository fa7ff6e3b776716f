"""ACLs on the admin APIs and ACLs written through the proxy, with real clients against a secured federation of real
processes (one Kafka node, a controller, a proxy with --authorization, a name service): the Java `kafka-acls` adds
and removes ACLs unmodified and its change takes effect for a producer; confluent-kafka's AdminClient gets Kafka's
error per entity for each admin API it may not use, and the topic is left as it was."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kafka import KafkaAdminClient
from kafka import TopicPartition as KafkaTopicPartition
from kafka import errors as kafka_errors

from fedkafka.kafka.tools import run_tool

from .federation import PASSWORDS, start_secured_federation

# One Kafka node, a controller, a proxy and a name service, three kafka-acls JVMs: about 2 minutes on a loaded
# 2-core machine, so it runs with the other secured-federation tests (make test-security).
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("FEDKAFKA_SECURITY_E2E") != "1",
                                 reason="heavy: runs with FEDKAFKA_SECURITY_E2E=1 (make test-security)")]
TOPIC = "guarded"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = start_secured_federation(tmp_path_factory.mktemp("acl-admin"), TOPIC)
    yield fed
    alive = {name: proc.poll() is None for name, proc in fed.procs.items()}
    logs = fed.logs()
    fed.stop()
    assert all(alive.values()), (alive, {k: v[-2000:] for k, v in logs.items()})


def _delivery_errors(conf: dict, n: int = 3) -> list:
    producer = Producer(conf | {"enable.idempotence": False, "message.timeout.ms": 20000, "retries": 0})
    errors: list = []
    for i in range(n):
        producer.produce(TOPIC, value=f"x{i}".encode(), on_delivery=lambda err, _m: errors.append(err))
    producer.flush(30)
    return errors


def _kafka_acls(fed, tmp_path, user: str, *args: str):
    return _kafka_tool(fed, tmp_path, user, "kafka-acls", *args)


def _kafka_tool(fed, tmp_path, user: str, tool: str, *args: str):
    props = tmp_path / f"{user}.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="{user}" password="{PASSWORDS[user]}";\n'
                     f"ssl.truststore.type=PEM\nssl.truststore.location={fed.pki.ca}\n")
    props.chmod(0o600)
    try:
        return run_tool(tool, "--bootstrap-server", f"127.0.0.1:{fed.nameservice['SASL_SSL']}",
                        "--command-config", str(props), *args, timeout=180, check=False)
    finally:
        props.unlink()  # holds a password


def _stored(fed, principal: str) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) of the principal's ACLs in the config database."""
    headers = {"Authorization": f"Bearer {fed.token_file.read_text().strip()}"}
    listed = httpx.get(f"{fed.controller_url}/v1/acls", params={"principal": principal}, headers=headers)
    assert listed.status_code == 200, listed.text
    return {(b["resource_type"], b["name"], b["operation"]) for b in listed.json()}


def _until(check, timeout: float = 30.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(0.5)


def test_kafka_acls_adds_and_removes_acls_through_the_proxy_and_they_take_effect(fed, tmp_path):
    assert _delivery_errors(fed.client_conf(user="mallory"))[0].code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED
    grant = ("--allow-principal", "User:mallory", "--operation", "Write", "--topic", TOPIC)
    added = _kafka_acls(fed, tmp_path, "admin", "--add", *grant)
    assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-3000:]
    # kafka-acls lists the resource's ACLs right after adding: the proxy answered once it served the new view
    assert "User:mallory" in added.stdout and "WRITE" in added.stdout
    assert ("TOPIC", TOPIC, "WRITE") in _stored(fed, "User:mallory")
    errors = _delivery_errors(fed.client_conf(user="mallory"))
    assert errors == [None, None, None], [e.str() for e in errors if e is not None]
    removed = _kafka_acls(fed, tmp_path, "admin", "--remove", "--force", *grant)
    assert removed.returncode == 0, removed.stdout[-2000:] + removed.stderr[-3000:]
    assert ("TOPIC", TOPIC, "WRITE") not in _stored(fed, "User:mallory")
    assert _delivery_errors(fed.client_conf(user="mallory"))[0].code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED


def test_kafka_acls_without_alter_on_the_cluster_is_refused_and_changes_nothing(fed, tmp_path):
    refused = _kafka_acls(fed, tmp_path, "mallory", "--add", "--allow-principal", "User:mallory", "--operation",
                          "All", "--topic", TOPIC)
    assert refused.returncode != 0
    assert "ClusterAuthorizationException" in refused.stdout + refused.stderr
    assert ("TOPIC", TOPIC, "ALL") not in _stored(fed, "User:mallory")


def _error_code(future) -> int:
    with pytest.raises(KafkaException) as failed:
        future.result(30)
    return failed.value.args[0].code()


def test_admin_apis_answer_kafkas_authorization_errors_per_entity_and_change_nothing(fed):
    bob = AdminClient(fed.client_conf(user="bob"))  # bob may describe the topic, nothing more
    topic_denied = RdKafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _error_code(bob.create_topics([NewTopic("bob-new", 1)])["bob-new"]) == topic_denied
    assert _error_code(bob.create_partitions([NewPartitions(TOPIC, 5)])[TOPIC]) == topic_denied
    assert _error_code(bob.delete_topics([TOPIC])[TOPIC]) == topic_denied
    topic_config = ConfigResource("TOPIC", TOPIC, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    broker_config = ConfigResource("BROKER", "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    results = bob.incremental_alter_configs([topic_config, broker_config])
    assert _error_code(results[topic_config]) == topic_denied
    assert _error_code(results[broker_config]) == RdKafkaError.CLUSTER_AUTHORIZATION_FAILED
    deleted = bob.delete_records([TopicPartition(TOPIC, 0, 1)])
    assert _error_code(next(iter(deleted.values()))) == topic_denied
    binding = AclBinding(ResourceType.TOPIC, TOPIC, ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.ALL, AclPermissionType.ALLOW)
    assert _error_code(bob.create_acls([binding])[binding]) == RdKafkaError.CLUSTER_AUTHORIZATION_FAILED
    # nothing reached the controller: the topic is as it was, and no topic or ACL was added
    admin = AdminClient(fed.client_conf(user="admin"))
    topics = admin.list_topics(timeout=30).topics
    assert len(topics[TOPIC].partitions) == 3 and "bob-new" not in topics
    assert _stored(fed, "User:bob") == {("TOPIC", TOPIC, "DESCRIBE"), ("GROUP", "bob-", "READ")}
    # a super user may: create and delete a topic through the proxy
    admin.create_topics([NewTopic("admin-new", 1)])["admin-new"].result(60)
    admin.delete_topics(["admin-new"])["admin-new"].result(60)


def _first_consumer_error(conf: dict, group: str) -> str | None:
    """The text of the first error a KIP-848 consumer of the topic reports (librdkafka makes a heartbeat's
    authorization error fatal: the code is then _FATAL and the text names the broker's error)."""
    consumer = Consumer(conf | {"group.id": group, "group.protocol": "consumer"})
    consumer.subscribe([TOPIC])
    try:
        def error():
            msg = consumer.poll(0.5)
            return msg.error().str() if msg is not None and msg.error() is not None else None

        return _until(error, 30)
    finally:
        consumer.close()


def test_a_kip848_consumer_needs_read_on_the_group_and_describe_on_the_topic(fed):
    # DESCRIBE on the groups lets FindCoordinator through: the heartbeat itself is refused
    for args in (("--operation", "DESCRIBE", "--group", "mallory-848"),
                 ("--operation", "READ", "--group", "mallory-subscriber")):
        res = fed.cli("acl", "add", "--principal", "User:mallory", *args)
        assert res.returncode == 0, res.stderr
    mallory = fed.client_conf(user="mallory")
    no_group = _first_consumer_error(mallory, "mallory-848")
    assert no_group is not None and "ConsumerGroupHeartbeat" in no_group and "Group authorization failed" in no_group
    no_topic = _first_consumer_error(mallory, "mallory-subscriber")
    assert no_topic is not None and "Topic authorization failed" in no_topic, no_topic


def _offset_error(conf: dict, group: str) -> tuple[int | None, int]:
    """(error code, offset) of the group's committed offset of partition 0, as OffsetFetch answers it."""
    consumer = Consumer(conf | {"group.id": group, "enable.auto.commit": False})
    try:
        (seen,) = consumer.committed([TopicPartition(TOPIC, 0)], timeout=30)
        return (seen.error.code() if seen.error is not None else None), seen.offset
    except KafkaException as e:
        return e.args[0].code(), -1
    finally:
        consumer.close()


def test_a_group_right_alone_neither_reads_nor_deletes_a_topics_committed_offsets(fed):
    """OffsetFetch needs DESCRIBE and OffsetDelete READ on each topic besides the group right, as in Kafka: mallory,
    with only DELETE (so DESCRIBE) on the group, gets TOPIC_AUTHORIZATION_FAILED instead of the offset, and deletes
    nothing."""
    group = "peek"
    admin_conf = fed.client_conf(user="admin")
    committer = Consumer(admin_conf | {"group.id": group, "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(TOPIC, 0, 5)], asynchronous=False)
    finally:
        committer.close()
    binding = AclBinding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, "User:mallory", "*",
                         AclOperation.DELETE, AclPermissionType.ALLOW)
    admin = AdminClient(admin_conf)  # kept: a client dropped before its futures are done fails them
    admin.create_acls([binding])[binding].result(60)  # answered once the proxy serves the new view
    mallory = fed.client_conf(user="mallory")
    assert _offset_error(mallory, group)[0] == RdKafkaError.TOPIC_AUTHORIZATION_FAILED
    # confluent-kafka has no DeleteConsumerGroupOffsets: kafka-python's admin client sends OffsetDelete
    deleter = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{fed.proxy['SASL_PLAINTEXT']}",
                               security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                               sasl_plain_username="mallory", sasl_plain_password=PASSWORDS["mallory"])
    try:
        deleted = deleter.delete_group_offsets(group, [KafkaTopicPartition(TOPIC, 0)])
    finally:
        deleter.close()
    assert deleted == {KafkaTopicPartition(TOPIC, 0): kafka_errors.TopicAuthorizationFailedError}
    assert _offset_error(admin_conf, group) == (None, 5)  # still there


def test_a_delete_of_two_groups_deletes_the_allowed_one_and_refuses_the_other(fed, tmp_path):
    """The Java AdminClient sends one DeleteGroups for the groups of one coordinator (here both): bob, who may delete
    bob-gone but only read bob-kept, deletes bob-gone and is refused bob-kept alone, as Kafka answers per group.
    Before, the proxy refused the whole request and neither was deleted."""
    admin_conf = fed.client_conf(user="admin")
    for group in ("bob-gone", "bob-kept"):
        committer = Consumer(admin_conf | {"group.id": group, "enable.auto.commit": False})
        try:
            committer.commit(offsets=[TopicPartition(TOPIC, 0, 5)], asynchronous=False)
        finally:
            committer.close()
    binding = AclBinding(ResourceType.GROUP, "bob-gone", ResourcePatternType.LITERAL, "User:bob", "*",
                         AclOperation.DELETE, AclPermissionType.ALLOW)
    admin = AdminClient(admin_conf)  # kept: a client dropped before its futures are done fails them
    admin.create_acls([binding])[binding].result(60)  # answered once the proxy serves the new view
    deleted = _kafka_tool(fed, tmp_path, "bob", "kafka-consumer-groups", "--delete", "--group", "bob-gone",
                          "--group", "bob-kept")
    said = deleted.stdout + deleted.stderr
    assert "Group 'bob-kept' could not be deleted" in said and "GroupAuthorization" in said, said[-3000:]
    assert "Group 'bob-gone' could not be deleted" not in said, said[-3000:]
    assert _offset_error(admin_conf, "bob-gone") == (None, -1001)  # the group and its offsets are gone
    assert _offset_error(admin_conf, "bob-kept") == (None, 5)
