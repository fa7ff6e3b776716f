#!/usr/bin/python
"""Ansible module: facts about a fedkafka federation, and waits on them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_info
short_description: Facts about a fedkafka federation (clusters, states, view version, proxies, topics)
description:
  - Reads the controller's C(GET /v1/status), C(GET /v1/clusters) and C(GET /v1/topics).
  - Can wait until the controller answers, until at least O(min_proxies) proxies are registered, and
    until every registered proxy applied the current view (when the controller reports applied versions).
  - Read-only; never reports a change.
options:
  gather:
    description: Which lists to read besides the status.
    type: list
    elements: str
    choices: [clusters, topics]
    default: [clusters, topics]
  wait:
    description: Retry until the controller answers and the conditions below hold.
    type: bool
    default: false
  min_proxies:
    description: With O(wait=true), the number of live proxies to wait for.
    type: int
    default: 0
  min_view_version:
    description: With O(wait=true), a view version every counted proxy must have applied.
    type: int
    default: 0
  timeout:
    description: Seconds to wait.
    type: int
    default: 120
extends_documentation_fragment: [fedkafka_api]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - fedkafka
"""

EXAMPLES = r"""
- name: Wait until both proxies applied the current view
  fedkafka_info:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    wait: true
    min_proxies: 2
  register: federation

- name: Show the view version
  ansible.builtin.debug:
    var: federation.view_version
"""

RETURN = r"""
view_version:
  description: Current view version.
  type: int
  returned: always
  sample: 7
clusters:
  description: Physical clusters with their state and reachability.
  type: list
  elements: dict
  returned: when clusters are gathered
  sample: [{"id": "c1", "bootstrap": "127.0.0.1:39011", "state": "active", "reachable": true, "coordination": true}]
topics:
  description: Logical topics.
  type: list
  elements: dict
  returned: when topics are gathered
  sample: [{"name": "orders", "partitions": 12}]
proxies:
  description: Registered live proxies as the status reports them.
  type: list
  elements: dict
  returned: always
  sample: [{"node_id": 1, "host": "127.0.0.1", "port": 39041, "role": "both", "applied_version": 7}]
controller:
  description: The URL of O(controller_url) that answered, the active controller's (where C(ansible.builtin.uri)
    tasks should send their requests).
  type: str
  returned: always
  sample: http://127.0.0.1:8780
status:
  description: The raw C(GET /v1/status) answer.
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import API_ARGUMENT_SPEC, ApiError, FedkafkaApi  # noqa: E402


def as_list(value) -> list:
    """The status may give a count or a list (or a dict keyed by id); always return a list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [v if isinstance(v, dict) else {"id": k, "value": v} for k, v in value.items()]
    return []


def proxy_count(value) -> int:
    return value if isinstance(value, int) else len(as_list(value))


def unmet(status: dict, min_proxies: int, min_version: int) -> str | None:
    """None when the wait conditions hold, else what is still missing."""
    proxies = status.get("proxies")
    if proxy_count(proxies) < min_proxies:
        return f"{proxy_count(proxies)} of {min_proxies} proxies registered"
    want = max(min_version, int(status.get("view_version") or 0)) if min_proxies else min_version
    lagging = [p for p in as_list(proxies)
               if isinstance(p, dict) and "applied_version" in p and int(p["applied_version"] or 0) < want]
    if lagging:
        return f"proxies {[p.get('node_id') for p in lagging]} have not applied view {want} yet"
    return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "gather": {"type": "list", "elements": "str", "choices": ["clusters", "topics"],
                       "default": ["clusters", "topics"]},
            "wait": {"type": "bool", "default": False},
            "min_proxies": {"type": "int", "default": 0},
            "min_view_version": {"type": "int", "default": 0},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    try:
        if p["wait"]:
            def ready():
                status = api.status()
                missing = unmet(status, p["min_proxies"], p["min_view_version"])
                if missing:
                    raise ApiError(missing)
                return status
            status = api.wait_until(ready, p["timeout"], what="the federation")
        else:
            status = api.status()
        result = {"status": status, "view_version": status.get("view_version"),
                  "proxies": as_list(status.get("proxies"))}
        if "clusters" in p["gather"]:
            result["clusters"] = api.clusters()
        if "topics" in p["gather"]:
            result["topics"] = as_list(api.topics())
        module.exit_json(changed=False, controller=api.base, **result)
    except ApiError as exc:
        module.fail_json(msg=str(exc), status_code=exc.status)


if __name__ == "__main__":
    main()
