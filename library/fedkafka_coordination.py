#!/usr/bin/python
"""Ansible module: move the coordination role (every consumer group and its committed offsets) to a cluster."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_coordination
short_description: Move the federation's consumer groups and their committed offsets to another cluster
description:
  - Starts the controller's coordination move (C(POST /v1/workflows), kind C(coordination_move)) onto O(to) and,
    with O(wait=true), follows it until it finishes (docs/DESIGN.md §10). Commits pause for the few seconds every
    proxy takes to acknowledge, each group's offsets are copied to O(to) and read back, then O(to) holds the groups
    (consumers rejoin there, one rebalance). The old coordination cluster can then be decommissioned.
  - O(unclean=true) is for a dead coordination cluster; the offsets come from the controller's last copy (taken
    every C(--offsets-copy-interval) seconds), so each group may fall back by that much. Refused while the old
    one answers; a planned move is refused while it does not.
  - Idempotent. When O(to) already holds the groups the module starts nothing and reports no change.
  - Check mode asks the controller for the plan (C(POST /v1/workflows?dry_run=true)), with the refusals of a run.
options:
  to:
    description: Id of the active cluster that takes the groups.
    type: str
    required: true
    aliases: [cluster]
  unclean:
    description: The coordination cluster is dead; restore the controller's last copy of the offsets.
    type: bool
    default: false
extends_documentation_fragment: [fedkafka_api, fedkafka_wait]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - fedkafka
"""

EXAMPLES = r"""
- name: Let c3 hold the consumer groups, so c1 can be decommissioned
  fedkafka_coordination:
    controller_url: http://10.0.0.5:8780,http://10.0.0.6:8780
    token: "{{ fedkafka_api_token }}"
    to: c3
"""

RETURN = r"""
coordination:
  description: The cluster holding the groups after the run (in check mode, the one that would).
  type: str
  returned: always
  sample: c3
previous:
  description: The cluster that held them before.
  type: str
  returned: always
  sample: c1
groups:
  description: Consumer groups whose offsets were copied (0 in check mode and when nothing moved).
  type: int
  returned: always
  sample: 3
workflow:
  description: The workflow run as the controller reports it (in check mode, the controller's dry-run plan).
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import (  # noqa: E402
    API_ARGUMENT_SPEC,
    WAIT_ARGUMENT_SPEC,
    ApiError,
    FedkafkaApi,
    RunFailed,
    plan_of,
    wait_for_run,
)


def holder(clusters: list[dict]) -> str | None:
    return next((c["id"] for c in clusters if c.get("coordination") and c.get("state") != "removed"), None)


def result(previous: str | None, now: str | None, workflow: dict, changed: bool, groups: int = 0) -> dict:
    return {"changed": changed, "coordination": now, "previous": previous, "groups": groups, "workflow": workflow,
            "diff": {"before": {"coordination": previous}, "after": {"coordination": now}}}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "to": {"type": "str", "required": True, "aliases": ["cluster"]},
            "unclean": {"type": "bool", "default": False},
            **WAIT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    target = p["to"]
    try:
        clusters = api.clusters() or []
        if target not in {c.get("id") for c in clusters}:
            module.fail_json(msg=f"unknown cluster {target!r}: it cannot hold the consumer groups (registered: "
                                 f"{', '.join(c.get('id', '?') for c in clusters) or 'none'})")
        previous = holder(clusters)
        plan = plan_of(module, api, "coordination_move", target, unclean=p["unclean"])
        if module.check_mode:
            changed = bool(plan.get("changed")) if plan is not None else previous != target
            module.exit_json(**result(previous, target, plan or {}, changed))
        if plan is not None and not plan.get("changed") and plan.get("running") is None:
            module.exit_json(**result(previous, target, plan, False))
        run = api.start_workflow("coordination_move", target, unclean=p["unclean"]) or {}
        if p["wait"]:
            run = wait_for_run(api, run, p["timeout"], f"coordination move to {target}")
        started = plan is None or plan.get("running") is None
        changed = started and bool(run.get("changed") or run.get("state") == "running")
        module.exit_json(**result(previous, holder(api.clusters() or []), run, changed, run.get("groups") or 0))
    except RunFailed as exc:
        module.fail_json(msg=str(exc), workflow=exc.run, changed=bool(exc.run.get("changed")))
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


if __name__ == "__main__":
    main()
