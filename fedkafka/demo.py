"""The produce/consume demo behind `fedkafka local demo` (and `make up`), with real confluent-kafka clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fedkafka.local import LocalState


def ensure_topic(bootstrap: str, topic: str, partitions: int, conf: dict[str, str] | None = None) -> None:
    admin = AdminClient({**(conf or {}), "bootstrap.servers": bootstrap})
    # -1: the cluster's default.replication.factor (3 on a local cluster of 3 brokers or more)
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)],
                                  operation_timeout=10)
    for future in futures.values():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def produce_consume(bootstrap: str, topic: str, messages: int, *, timeout: float = 60.0,
                    client_id: str = "fedkafka-demo", conf: dict[str, str] | None = None) -> dict[str, Any]:
    """Produce `messages` keyed records, then read them back with a fresh consumer group (no commits).

    `conf`: more client settings (a secured federation's login). Returns counts; raises RuntimeError when not
    every acked record came back.
    """
    run = uuid.uuid4().hex[:8]
    conf = {**(conf or {}), "bootstrap.servers": bootstrap}
    producer = Producer({**conf, "client.id": client_id, "enable.idempotence": True, "linger.ms": 5})
    acked: list[tuple[bytes, int, int]] = []
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked.append((msg.key(), msg.partition(), msg.offset()))

    started = time.monotonic()
    for i in range(messages):
        producer.produce(topic, key=f"key-{i % 10}".encode(), value=f"{run}:{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise RuntimeError(f"produce to {topic} via {bootstrap} failed: {remaining} unsent, errors {errors[:3]}")
    produce_seconds = time.monotonic() - started

    # No commits: a one-off group that left offsets behind would hold `decommission --drain groups`
    # (which waits for every group that committed on a partition) until someone deletes it.
    consumer = Consumer({**conf, "client.id": client_id, "group.id": f"demo-{run}",
                        "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < messages and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = (msg.value() or b"").decode()
            if value.startswith(run + ":"):
                seen.add(value)
    finally:
        consumer.close()
    if len(seen) < messages:
        raise RuntimeError(f"consumed only {len(seen)} of {messages} acked records from {topic} via {bootstrap}")
    return {"bootstrap": bootstrap, "topic": topic, "produced": len(acked), "consumed": len(seen),
            "produce_seconds": round(produce_seconds, 3), "seconds": round(time.monotonic() - started, 3)}


_NOT_READY_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


def physical_end_offsets(bootstrap: str, topic: str, partitions: list[int],
                         conf: dict[str, str] | None = None) -> dict[int, int]:
    """High watermarks of a physical topic, read directly from its cluster (not through fedkafka); `conf`: the
    login secured brokers require (the service user's)."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({**(conf or {}), "bootstrap.servers": bootstrap, "group.id": "fedkafka-demo-watermarks"})
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
            except KafkaException as exc:
                # a topic created a moment ago may not have a leader everywhere yet
                if exc.args[0].code() not in _NOT_READY_YET or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def run_demo(state: LocalState, messages: int, topic: str, log: Callable[[str], None] = print,
             partitions: int = 8) -> dict[str, Any]:
    """Through the federation when it runs (name service bootstrap), else against each cluster directly."""
    if "nameservice" not in state.services:
        return _run_clusters_demo(state, messages, topic, log)
    from fedkafka.local import controller_api

    with controller_api(state) as api:
        resp = api.put(f"/v1/topics/{topic}", json={"partitions": partitions, "placement": "blocks", "config": {}})
        if resp.status_code >= 400:
            raise RuntimeError(f"creating logical topic {topic}: {resp.status_code} {resp.text}")
        chains = api.get(f"/v1/topics/{topic}").json()["chains"]
    actives = [c["segments"][-1] for c in chains]
    by_cluster: dict[str, list[dict]] = {}
    for seg in actives:
        by_cluster.setdefault(seg["cluster"], []).append(seg)
    bootstraps = {c.name: c.bootstrap for c in state.clusters}
    # A secured federation: the demo user's client settings through the name service's SASL_SSL listener, the
    # service user's straight to the brokers (no one else may read them).
    client, broker = (state.local_security.client_config(), state.local_security.upstream_client_config()) \
        if state.secured else ({}, {})
    before = {cid: physical_end_offsets(bootstraps[cid], segs[0]["topic"], [s["partition"] for s in segs], broker)
              for cid, segs in by_cluster.items()}
    bootstrap = client.get("bootstrap.servers") or state.services["nameservice"]["bootstrap"]
    result = produce_consume(bootstrap, topic, messages, conf=client)
    landed = {}
    for cid, segs in by_cluster.items():
        after = physical_end_offsets(bootstraps[cid], segs[0]["topic"], [s["partition"] for s in segs], broker)
        landed[cid] = sum(after[p] - before[cid][p] for p in after)
    if sum(landed.values()) != result["produced"]:
        raise RuntimeError(f"the physical clusters hold {landed} new records, {result['produced']} were acked")
    log(f"produced {result['produced']} and consumed {result['consumed']} records of logical topic {topic} "
        f"({partitions} partitions) through the name service at {bootstrap}")
    log("records per physical cluster, read directly from each: "
        + ", ".join(f"{cid}={n}" for cid, n in sorted(landed.items())))
    return {**result, "records_per_cluster": landed}


def _run_clusters_demo(state: LocalState, messages: int, topic: str, log: Callable[[str], None]) -> dict[str, Any]:
    running = [c for c in state.clusters if c.running]
    if not running:
        raise RuntimeError("no local cluster is running: run `fedkafka local up` first")
    results = []
    conf = state.local_security.upstream_client_config() if state.secured else {}  # the brokers' only user
    for cluster in running:
        ensure_topic(cluster.bootstrap, topic, partitions=4, conf=conf)
        result = produce_consume(cluster.bootstrap, topic, messages, conf=conf)
        log(f"{cluster.name}: produced {result['produced']}, consumed {result['consumed']} "
            f"on {cluster.bootstrap} in {result['seconds']}s")
        results.append({"cluster": cluster.name, **result})
    return {"clusters": results}
