#!/usr/bin/python
"""Ansible module: a logical topic of a fedkafka federation (idempotent create, grow, config; never shrink)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_topic
short_description: Create, update or delete a logical topic of a fedkafka federation
description:
  - Talks to the fedkafka controller's admin API (C(GET/PUT/DELETE /v1/topics/{name})).
  - Idempotent: an existing topic with the same partition count and config is left alone.
  - Refuses to shrink the number of logical partitions (keys would move to other partitions and
    records would become unreachable); the error names the topic and both counts.
  - O(placement) only matters when the topic is created; the physical placement of an existing topic
    changes through the scale-up and decommission workflows.
  - Check mode reports the change it would make; C(--diff) shows partitions and config before and after.
version_added: "0.1.0"
options:
  name:
    description: Logical topic name.
    type: str
    required: true
    aliases: [topic]
  partitions:
    description: Number of logical partitions C(P). Required for O(state=present). Can grow, never shrink.
    type: int
  placement:
    description: How new partitions are laid out over the active clusters.
    type: str
    choices: [blocks, balanced]
    default: blocks
  config:
    description: Topic config (string values), applied to every physical topic. Keys not listed are left alone.
    type: dict
    default: {}
  state:
    description: Desired state.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment: [fedkafka_api]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - fedkafka
"""

EXAMPLES = r"""
- name: Orders topic with 12 logical partitions
  fedkafka_topic:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    name: orders
    partitions: 12
    config:
      retention.ms: "604800000"
"""

RETURN = r"""
topic:
  description: The topic as the controller reports it after the run (before it, in check mode).
  type: dict
  returned: always
  sample: {"name": "orders", "partitions": 12, "config": {"retention.ms": "604800000"}}
actions:
  description: What the run did (or would do).
  type: list
  elements: str
  returned: always
  sample: ["create orders with 12 partitions (placement blocks)"]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import (  # noqa: E402
    API_ARGUMENT_SPEC,
    ApiError,
    FedkafkaApi,
    read_or_predict,
)


def partition_count(topic: dict) -> int:
    value = topic.get("partitions")
    return len(value) if isinstance(value, list) else int(value or 0)


def string_config(config: dict | None) -> dict:
    return {str(k): str(v) for k, v in (config or {}).items()}


class ShrinkRefused(ValueError):
    pass


def plan(current: dict | None, params: dict) -> list[str]:
    name, want = params["name"], params["partitions"]
    if params["state"] == "absent":
        return [f"delete {name}"] if current else []
    if current is None:
        return [f"create {name} with {want} partitions (placement {params['placement']})"]
    have = partition_count(current)
    if want < have:
        raise ShrinkRefused(f"refusing to shrink topic {name} from {have} to {want} partitions: logical partitions "
                            "can only grow (keys would re-hash and records become unreachable)")
    actions = []
    if want > have:
        actions.append(f"grow {name} from {have} to {want} partitions")
    have_config = string_config(current.get("config"))
    changed = {k: v for k, v in string_config(params["config"]).items() if have_config.get(k) != v}
    if changed:
        actions.append(f"set config of {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return actions


def public(topic: dict | None) -> dict:
    if not topic:
        return {}
    return {"name": topic.get("name"), "partitions": partition_count(topic),
            "config": string_config(topic.get("config"))}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "name": {"type": "str", "required": True, "aliases": ["topic"]},
            "partitions": {"type": "int"},
            "placement": {"type": "str", "default": "blocks", "choices": ["blocks", "balanced"]},
            "config": {"type": "dict", "default": {}},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        },
        required_if=[("state", "present", ["partitions"])],
        supports_check_mode=True,
    )
    p = module.params
    current = None
    if p["state"] == "present" and p["partitions"] < 1:
        module.fail_json(msg=f"partitions must be >= 1 (got {p['partitions']})")
    api = FedkafkaApi.from_module(module)
    try:
        current = read_or_predict(module, lambda: api.topic(p["name"]))
        actions = plan(current, p)
        before = public(current)
        after = {} if p["state"] == "absent" else {
            "name": p["name"], "partitions": p["partitions"],
            "config": {**before.get("config", {}), **string_config(p["config"])}}
        diff = {"before": before, "after": after if actions else before}
        if module.check_mode or not actions:
            module.exit_json(changed=bool(actions), actions=actions, topic=current or {}, diff=diff)
        if p["state"] == "absent":
            api.delete_topic(p["name"])
            module.exit_json(changed=True, actions=actions, topic={}, diff=diff)
        config = {**before.get("config", {}), **string_config(p["config"])}
        result = api.put_topic(p["name"], p["partitions"], p["placement"], config) or {}
        topic = result.get("topic") or api.topic(p["name"]) or {}
        module.exit_json(changed=True, actions=actions, topic=topic, diff=diff)
    except ShrinkRefused as exc:
        module.fail_json(msg=str(exc), topic=public(current))
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


if __name__ == "__main__":
    main()
