#!/usr/bin/python
"""Ansible module: is a physical Kafka cluster reachable and ready? (confluent-kafka Metadata)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kafka_broker_info
short_description: Check that a physical Kafka cluster answers Metadata, optionally waiting for it
description:
  - Connects to a physical Apache Kafka cluster with confluent-kafka and reads its Metadata
    (brokers, controller, cluster id, topic count).
  - With O(wait=true) it retries until the cluster answers with at least O(min_brokers) brokers, among them
    every one of O(node_ids), or O(timeout) seconds pass; use it after starting brokers and before registering
    a cluster.
  - Read-only; never reports a change.
version_added: "0.1.0"
options:
  bootstrap:
    description: Bootstrap servers of the physical cluster, C(host:port[,host:port]).
    type: str
    required: true
  wait:
    description: Retry until the cluster is ready instead of failing at once.
    type: bool
    default: false
  timeout:
    description: Seconds to wait when O(wait=true) (and the per-attempt limit otherwise).
    type: int
    default: 60
  min_brokers:
    description: Number of brokers the Metadata answer must list to count as ready.
    type: int
    default: 1
  node_ids:
    description:
      - Node ids (C(node.id)) of brokers the Metadata answer must list to count as ready, e.g. every broker of the
        inventory group. A count alone is met by a stale registration of a removed node while one is missing.
      - The failure message names the ones missing.
    type: list
    elements: int
    default: []
  config:
    description:
      - More librdkafka settings for the connection, e.g. C(security.protocol), C(ssl.ca.location),
        C(sasl.mechanism), C(sasl.username) and C(sasl.password) for brokers that require SASL_SSL
        (roles/kafka_broker with C(kafka_broker_security_protocol=SASL_SSL)). Never logged.
    type: dict
    default: {}
  replicated:
    description:
      - Also require every partition to have all its replicas in sync (RV(under_replicated) is 0), as a rolling
        restart waits for before it stops the next broker.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - confluent-kafka >= 2.10 on the managed host
author:
  - fedkafka
"""

EXAMPLES = r"""
- name: Wait until c3 answers
  kafka_broker_info:
    bootstrap: 10.0.3.11:9092,10.0.3.12:9092
    wait: true
    timeout: 120
    min_brokers: 3
    node_ids: [1, 2, 3]
"""

RETURN = r"""
ready:
  description: The cluster answered Metadata with at least O(min_brokers) brokers, every one of O(node_ids) among them.
  type: bool
  returned: always
  sample: true
cluster_id:
  description: The cluster's KRaft cluster id.
  type: str
  returned: when ready
  sample: JuP7wOzCRjGZbCrYmd8CIg
controller_id:
  description: Node id of the active controller.
  type: int
  returned: when ready
  sample: 1
brokers:
  description: Brokers from the Metadata answer.
  type: list
  elements: dict
  returned: when ready
  sample: [{"id": 1, "host": "127.0.0.1", "port": 39011}]
under_replicated:
  description: Partitions (internal ones included) whose in-sync replicas are fewer than their replicas.
  type: int
  returned: when ready
  sample: 0
topic_count:
  description: Number of topics (internal ones included).
  type: int
  returned: when ready
  sample: 3
elapsed:
  description: Seconds spent waiting.
  type: float
  returned: always
  sample: 1.2
"""

import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402

try:
    from confluent_kafka.admin import AdminClient
    HAS_CONFLUENT = True
except ImportError:  # reported by fail_json below
    HAS_CONFLUENT = False


def read_metadata(bootstrap: str, attempt_timeout: float, config: dict | None = None) -> dict:
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000,
                         "reconnect.backoff.max.ms": 500, "log_level": 0, **(config or {})})
    md = admin.list_topics(timeout=attempt_timeout)
    return {
        "cluster_id": md.cluster_id,
        "controller_id": md.controller_id,
        "brokers": sorted(({"id": b.id, "host": b.host, "port": b.port} for b in md.brokers.values()),
                          key=lambda b: b["id"]),
        "topic_count": len(md.topics),
        "under_replicated": sum(1 for t in md.topics.values() for p in t.partitions.values()
                                if len(p.isrs) < len(p.replicas)),
    }


def not_ready_reason(info: dict, min_brokers: int, node_ids: list[int], replicated: bool) -> str:
    """Why a Metadata answer does not count as ready; '' when it does."""
    listed = [b["id"] for b in info["brokers"]]
    missing = sorted(set(node_ids) - set(listed))
    if len(listed) < min_brokers or missing:
        reason = f"{len(listed)} broker(s) in Metadata, {min_brokers} wanted"
        return reason + (f"; node id(s) {', '.join(map(str, missing))} missing (listed: "
                         f"{', '.join(map(str, listed)) or 'none'})" if missing else "")
    if replicated and info["under_replicated"]:
        return f"{info['under_replicated']} partition(s) under-replicated"
    return ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bootstrap": {"type": "str", "required": True},
            "wait": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 60},
            "min_brokers": {"type": "int", "default": 1},
            "node_ids": {"type": "list", "elements": "int", "default": []},
            "replicated": {"type": "bool", "default": False},
            "config": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    if not HAS_CONFLUENT:
        module.fail_json(msg=missing_required_lib("confluent-kafka"))
    p = module.params
    if p["timeout"] <= 0 or p["min_brokers"] <= 0:
        module.fail_json(msg=f"timeout ({p['timeout']}) and min_brokers ({p['min_brokers']}) must be positive")
    started = time.monotonic()
    deadline = started + p["timeout"]
    last_error = ""
    while True:
        info = None
        try:
            info = read_metadata(p["bootstrap"], min(5.0, max(1.0, deadline - time.monotonic())),
                                 {k: str(v) for k, v in p["config"].items()})
        except Exception as exc:  # KafkaException while a broker boots or is unreachable
            last_error = str(exc)
        if info is not None:
            last_error = not_ready_reason(info, p["min_brokers"], p["node_ids"], p["replicated"])
            if not last_error:
                module.exit_json(changed=False, ready=True, elapsed=round(time.monotonic() - started, 2), **info)
        if not p["wait"] or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    module.fail_json(msg=f"Kafka cluster at {p['bootstrap']} is not ready: {last_error}", ready=False,
                     elapsed=round(time.monotonic() - started, 2))


if __name__ == "__main__":
    main()
