#!/usr/bin/python
"""Ansible module: fail a dead physical cluster's writes over to the live clusters (the failover workflow)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_failover
short_description: Move a dead physical cluster's writes to the live clusters now (an unclean move)
description:
  - Starts the controller's failover workflow (C(POST /v1/workflows), kind C(failover)) for O(cluster) and, with
    O(wait=true), follows it until it finishes (docs/DESIGN.md §9). The cluster goes C(read_only) and every active
    segment on it continues on the active cluster holding fewest, its offsets jumping past the last end the
    controller read (a gap; records the cluster holds beyond it become readable there once it is back).
  - Refused by the controller, changing nothing, for an unknown cluster, the only active one, the coordination
    cluster (move that role first, M(fedkafka_coordination)), and a cluster that answers (decommission it
    instead, M(fedkafka_cluster) O(state=absent), since a planned move keeps every record in place).
  - Idempotent. Once nothing writes to the cluster any more (it failed over, dead or back since) the module
    starts nothing and reports no change. A failover the controller is already running for the cluster is waited
    for, not started again, and reports no change (the change was the run that started it).
  - Check mode asks the controller for the run's plan (C(POST /v1/workflows?dry_run=true)), so C(--check --diff)
    shows the state change and exactly the partitions the run moves, the same lines as the run's RV(moves).
options:
  cluster:
    description: Id of the dead cluster.
    type: str
    required: true
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
- name: Every broker of c1 is gone; move its writes to c2 and c3
  fedkafka_failover:
    controller_url: http://10.0.0.5:8780,http://10.0.0.6:8780
    token: "{{ fedkafka_api_token }}"
    cluster: c1
  register: failover

- name: Report
  ansible.builtin.debug:
    msg: "{{ failover.moves | length }} partitions now write elsewhere"
"""

RETURN = r"""
moves:
  description: The partitions moved (planned, in check mode), as C(topic/partition from -> to) lines.
  type: list
  elements: str
  returned: always
  sample: ["orders/0: c1 -> c2"]
states:
  description: The cluster's state changes (planned, in check mode); C(given up) for a dead cluster a decommission
    made read_only or draining (the failover only marks it given up; one that answers is left as it is). The diff
    shows the state and the C(given_up) mark before and after.
  type: list
  elements: str
  returned: always
  sample: ["active -> read_only"]
workflow:
  description: The workflow run as the controller reports it (in check mode, the controller's dry-run plan).
  type: dict
  returned: always
  sample: {"id": 5, "kind": "failover", "cluster": "c1", "state": "done", "moved": 4}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import (  # noqa: E402
    API_ARGUMENT_SPEC,
    WAIT_ARGUMENT_SPEC,
    ApiError,
    FedkafkaApi,
    RunFailed,
    move_lines,
    plan_of,
    wait_for_run,
)

READ_ONLY = "active -> read_only"
GIVEN_UP = "given up"  # a cluster a decommission made read_only or draining, marked given up (docs/DESIGN.md §9.2)


def diff_of(cluster: str, current: dict, states: list[str], moves: list[str]) -> dict:
    """The state, the given-up mark (a controller from before it names none: left out) and the moves, before and
    after: any state change of a failover (read_only, or the mark alone) leaves the cluster given up."""
    state = current.get("state", "active")
    before: dict = {"state": state, "moves": []}
    after: dict = {"state": "read_only" if READ_ONLY in states else state, "moves": moves}
    if current.get("given_up") is not None:
        before["given_up"] = current["given_up"]
        after["given_up"] = current["given_up"] or bool(states)
    header = f"cluster {cluster}"
    return {"before": before, "after": after, "before_header": header, "after_header": header}


def estimate(current: dict) -> dict:
    """Check mode against a controller without a failover dry run: the state change only."""
    states = [READ_ONLY] if current.get("state", "active") == "active" else []
    return {"changed": bool(states), "states": states, "partitions_moved": [], "running": None}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "cluster": {"type": "str", "required": True},
            **WAIT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    cid = p["cluster"]
    moves: list[str] = []
    try:
        current = api.cluster(cid)
        if current is None:
            module.fail_json(msg=f"unknown cluster {cid!r}: nothing to fail over (registered: "
                                 f"{', '.join(c.get('id', '?') for c in api.clusters() or []) or 'none'})")
        current = dict(current)  # as it was before the run: the diff's `before`
        state = current.get("state", "active")
        # a controller from before the given-up mark names none: taken as given up, as it took read_only then
        marked = current.get("given_up", True)
        plan = plan_of(module, api, "failover", cid)
        if module.check_mode:
            plan = plan if plan is not None else estimate(current)
            moves = move_lines(plan.get("partitions_moved"))
            module.exit_json(changed=bool(plan.get("changed")), moves=moves, states=plan.get("states", []),
                             workflow=plan, diff=diff_of(cid, current, plan.get("states", []), moves))
        if plan is not None and not plan.get("changed") and plan.get("running") is None:
            module.exit_json(changed=False, moves=[], states=[], workflow=plan, diff=diff_of(cid, current, [], []))
        run = api.start_workflow("failover", cid) or {}
        if p["wait"]:
            run = wait_for_run(api, run, p["timeout"], f"failover of {cid}")
        moves = move_lines(run.get("partitions_moved"))
        # a run the controller was already doing is only waited for; one left running (wait=false) will change
        started = plan is None or plan.get("running") is None
        changed = started and bool(run.get("changed") or run.get("state") == "running")
        states = [READ_ONLY] if state == "active" and changed else [GIVEN_UP] if changed and not marked else []
        module.exit_json(changed=changed, moves=moves, states=states, workflow=run,
                         diff=diff_of(cid, current, states, moves))
    except RunFailed as exc:
        module.fail_json(msg=str(exc), workflow=exc.run, moves=move_lines(exc.run.get("partitions_moved")),
                         changed=bool(exc.run.get("changed")))
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


if __name__ == "__main__":
    main()
