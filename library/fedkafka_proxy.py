#!/usr/bin/python
"""Ansible module: drain a fedkafka proxy of its partitions' leadership (before a restart), or undrain it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_proxy
short_description: Drain a fedkafka proxy of its partitions' leadership, or give it back
description:
  - Talks to the controller's C(POST /v1/proxies/{node_id}/drain) and C(.../undrain), finds the proxy in
    C(GET /v1/status) by its instance id.
  - A drained proxy (every worker of a proxy run with C(--workers N)) leaves the view's proxies, so it leads no
    partition and Metadata no longer names it; it refuses produce with a retriable error, so clients refresh
    metadata and move to the new leaders, and it keeps answering what is in flight (docs/DESIGN.md §4.11).
  - A drain lasts until O(state=active): restarting the proxy does not end it.
  - With O(wait=true) it returns once every live proxy, the drained one too, applied the view that drain (or
    undrain) made, so no client is sent to the drained proxy any more when the task ends.
  - The controller refuses to drain the last live proxy of its pool and role (it would leave its partitions
    without a leader); check mode predicts that refusal too.
  - Changed only when the proxy's drain state changes; check mode predicts exactly that and writes nothing.
version_added: "0.1.0"
options:
  instance_id:
    description:
      - The proxy's instance id, C(<advertised host>:<port>) (what C(fedkafka status) lists).
      - One of O(instance_id) and O(node_id) is required.
    type: str
  node_id:
    description: The proxy's node id (or a member id of one of its workers).
    type: int
  state:
    description: V(drained) takes its leadership away, V(active) gives it back.
    type: str
    choices: [drained, active]
    default: drained
  last_in_pool:
    description:
      - What to do when the controller would refuse the drain because the proxy is the last live one of its pool
        and role. V(fail) fails the task; V(skip) leaves it undrained and reports no change, with the reason in
        C(msg) (a rolling restart then restarts it anyway, as its pool has no other proxy to move to).
    type: str
    choices: [fail, skip]
    default: fail
  wait:
    description: Wait until every live proxy applied the view the change made (or the current one, when nothing
      changed).
    type: bool
    default: true
  timeout:
    description: Seconds to wait.
    type: int
    default: 120
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
- name: Drain this proxy before restarting it
  fedkafka_proxy:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    instance_id: "{{ fedkafka_proxy_advertised_host }}:{{ fedkafka_proxy_port }}"
    state: drained
- name: Give it its leadership back once it runs again
  fedkafka_proxy:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    instance_id: "{{ fedkafka_proxy_advertised_host }}:{{ fedkafka_proxy_port }}"
    state: active
"""

RETURN = r"""
node_id:
  description: The proxy's node id.
  type: int
  returned: success
  sample: 3
draining:
  description: Whether the proxy is drained now (in check mode, would be).
  type: bool
  returned: success
view_version:
  description: The view version every live proxy applied (O(wait=true)), or the one the change made.
  type: int
  returned: success
  sample: 42
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import API_ARGUMENT_SPEC, ApiError, FedkafkaApi  # noqa: E402


def find(proxies: list, instance_id: str | None, node_id: int | None) -> dict | None:
    """The status entry of the proxy, by instance id or node id (a worker's member id names its node)."""
    for p in proxies:
        members = [w.get("member_id") for w in p.get("workers") or ()]
        if instance_id is not None and p.get("instance_id") == instance_id:
            return p
        if node_id is not None and (p.get("node_id") == node_id or node_id in members):
            return p
    return None


def refusal(proxies: list, proxy: dict) -> str | None:
    """The controller's refusal to drain `proxy` (the last live proxy of its pool and role), predicted."""
    others = [p for p in proxies if p.get("node_id") != proxy.get("node_id") and p.get("pool") == proxy.get("pool")
              and p.get("role") == proxy.get("role") and not p.get("draining")]
    if others:
        return None
    return (f"proxy {proxy.get('node_id')} ({proxy.get('instance_id')}) is the last live {proxy.get('role')} of pool "
            f"{proxy.get('pool')!r}: draining it would leave its partitions without a leader")


def lagging(status: dict, version: int) -> str | None:
    """None once every live proxy applied `version`, else which have not."""
    behind = [p.get("node_id") for p in status.get("proxies") or () if int(p.get("applied_version") or 0) < version]
    return f"proxies {behind} have not applied view {version} yet" if behind else None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "instance_id": {"type": "str"},
            "node_id": {"type": "int"},
            "state": {"type": "str", "default": "drained", "choices": ["drained", "active"]},
            "last_in_pool": {"type": "str", "default": "fail", "choices": ["fail", "skip"]},
            "wait": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 120},
        },
        required_one_of=[("instance_id", "node_id")],
        mutually_exclusive=[("instance_id", "node_id")],
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    want = p["state"] == "drained"
    try:
        status = api.status() or {}
        proxies = status.get("proxies") or []
        proxy = find(proxies, p["instance_id"], p["node_id"])
        if proxy is None:
            module.fail_json(msg=f"no live proxy {p['instance_id'] or p['node_id']} in the controller's status")
        node_id, was = proxy["node_id"], bool(proxy.get("draining"))
        changed = was != want
        diff = {"before": {"draining": was}, "after": {"draining": want}}
        if changed and want and (why := refusal(proxies, proxy)):
            if p["last_in_pool"] == "skip":
                module.exit_json(changed=False, node_id=node_id, draining=False, msg=why,
                                 view_version=int(status.get("view_version") or 0))
            module.fail_json(msg=why, node_id=node_id)
        version = int(status.get("view_version") or 0)
        if module.check_mode:
            module.exit_json(changed=changed, node_id=node_id, draining=want, view_version=version, diff=diff)
        if changed:
            try:
                answer = api.request("POST", f"/v1/proxies/{node_id}/{'drain' if want else 'undrain'}") or {}
            except ApiError as exc:  # the controller's own count (another drain may have won since the status)
                if exc.status == 409 and want and p["last_in_pool"] == "skip":
                    module.exit_json(changed=False, node_id=node_id, draining=False, msg=str(exc), view_version=version)
                raise
            changed, version = bool(answer.get("changed", True)), int(answer.get("view_version") or version)
        if p["wait"]:
            def applied():
                now = api.status() or {}
                missing = lagging(now, version)
                if missing:
                    raise ApiError(missing)
                return now
            api.wait_until(applied, p["timeout"], what=f"every proxy applying view {version}")
        module.exit_json(changed=changed, node_id=node_id, draining=want, view_version=version, diff=diff)
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


if __name__ == "__main__":
    main()
