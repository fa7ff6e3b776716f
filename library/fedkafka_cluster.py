#!/usr/bin/python
"""Ansible module: a physical cluster of a fedkafka federation (register, read_only, decommission)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_cluster
short_description: Register, restrict or decommission a physical Kafka cluster in a fedkafka federation
description:
  - Talks to the fedkafka controller's admin API (C(GET /v1/clusters), C(PUT /v1/clusters/{id}),
    C(POST /v1/clusters/{id}/state), C(POST /v1/workflows)).
  - C(present) registers the cluster (or updates its bootstrap/coordination flag) and keeps it C(active).
    A C(removed) cluster never becomes active again (the controller refuses it), so C(present) on one changes
    nothing and warns, in check mode too; C(site.yml) run again after a decommission, the cluster still in the
    inventory, stays idempotent and says so. To use its Kafka again, delete there the leftover physical
    topics of deleted topics, then register it under a new id.
  - C(read_only) moves every active segment off the cluster; consumers still read it.
  - C(absent) is a full decommission (C(read_only), C(draining), C(removed)); with O(wait=true) it
    returns only once the controller reports the cluster removed.
  - A decommission the controller is already running for the cluster (an earlier run timed out) is
    waited for, not started again; that run writes nothing and reports C(changed=false).
  - Check mode computes the plan (RV(actions)) without changing anything; C(--diff) shows the cluster
    before and after. For O(state=absent) it also lists the partitions the decommission would move off the
    cluster, as the controller plans them (C(POST /v1/workflows?dry_run=true)); the run lists the ones it moved.
version_added: "0.1.0"
options:
  id:
    description: Cluster id, e.g. C(c1).
    type: str
    required: true
    aliases: [name, cluster]
  bootstrap:
    description:
      - Bootstrap servers of the physical cluster, C(host:port[,host:port]).
      - Required to register a cluster that the controller does not know yet.
    type: str
  coordination:
    description: Whether this cluster hosts the federation's consumer groups (leave unset to keep it).
    type: bool
  state:
    description: Desired state.
    type: str
    choices: [present, read_only, absent]
    default: present
  drain:
    description:
      - With O(state=absent), remove the cluster as soon as every consumer group committed past its
        seals instead of waiting for retention to expire its segments.
    type: bool
    default: false
  wait:
    description: Wait until the controller reports the target state (for O(state=absent)).
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
- name: Register c3
  fedkafka_cluster:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    id: c3
    bootstrap: 10.0.3.11:9092,10.0.3.12:9092

- name: Retire c1 (waits until no segment references it)
  fedkafka_cluster:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    id: c1
    state: absent
    drain: true
    timeout: 1800
"""

RETURN = r"""
cluster:
  description: The cluster as the controller reports it after the run (before it, in check mode).
  type: dict
  returned: always
  sample: {"id": "c3", "bootstrap": "127.0.0.1:39031", "state": "active", "reachable": true, "coordination": false}
moves:
  description: Partitions a decommission moved off the cluster (planned, in check mode), C(topic/partition from -> to).
  type: list
  elements: str
  returned: always
  sample: ["orders/2: c1 -> c2"]
actions:
  description: What the run did (or, in check mode, would do), in order.
  type: list
  elements: str
  returned: always
  sample: ["register c3 at 127.0.0.1:39031"]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import (  # noqa: E402
    API_ARGUMENT_SPEC,
    WAIT_ARGUMENT_SPEC,
    ApiError,
    FedkafkaApi,
    move_lines,
    read_or_predict,
)

# Decommission only goes forward: active -> read_only -> draining -> removed.
STATE_ORDER = {"active": 0, "read_only": 1, "draining": 2, "removed": 3}


def plan(current: dict | None, params: dict, running: dict | None = None) -> list[tuple[str, str, object]]:
    """The API calls that bring `current` to the wanted state: (kind, description, argument).

    `running` is the controller's unfinished decommission run of this cluster, if any: state=absent then
    only waits for it (kind "wait", the one kind that writes nothing)."""
    cid, state, bootstrap = params["id"], params["state"], params["bootstrap"]
    coordination = params["coordination"]
    steps: list[tuple[str, str, object]] = []
    if current is None:
        if state == "absent":
            return steps
        steps.append(("put", f"register {cid} at {bootstrap}", None))
        current = {"state": "active", "bootstrap": bootstrap, "coordination": bool(coordination)}
    else:
        changes = []
        if bootstrap and bootstrap != current.get("bootstrap"):
            changes.append(f"bootstrap {current.get('bootstrap')} -> {bootstrap}")
        if coordination is not None and coordination != bool(current.get("coordination")):
            changes.append(f"coordination {bool(current.get('coordination'))} -> {coordination}")
        if changes and state != "absent":
            steps.append(("put", f"update {cid}: " + ", ".join(changes), None))
    now = STATE_ORDER.get(current.get("state", "active"), 0)
    if state == "present" and now > 0:  # removed: refused before (removed_refusal)
        steps.append(("state", f"reactivate {cid} ({current.get('state')} -> active)", "active"))
    elif state == "read_only" and now < STATE_ORDER["read_only"]:
        steps.append(("state", f"make {cid} read_only (move its active segments to other clusters)", "read_only"))
    elif state == "absent" and now < STATE_ORDER["removed"] and running is not None:
        steps.append(("wait", f"wait for the running decommission of {cid} (workflow {running.get('id')}, "
                      f"phase {running.get('step')})", running))
    elif state == "absent" and now < STATE_ORDER["removed"]:
        steps.append(("decommission", f"decommission {cid} (read_only, draining, removed"
                      f"{', drain consumer groups' if params['drain'] else ''})", None))
    return steps


def removed_refusal(current: dict | None, params: dict) -> str | None:
    """Why state=present cannot be met (a warning, the task unchanged): the controller never reactivates a removed
    cluster, nor re-registers its id (PUT answers 409), so the cluster takes no writes (docs/DESIGN.md §4.13)."""
    if params["state"] != "present" or not current or current.get("state") != "removed":
        return None
    cid = params["id"]
    return (f"cluster {cid} was removed: it stays removed and takes no writes (the controller never makes a removed "
            f"cluster active again, nor registers its id again); take it out of the inventory. To use its Kafka "
            f"again, first delete there the leftover physical topics of deleted topics (fedkafka stopped deleting them "
            f"when {cid} was removed; a topic is not created over one holding records, docs/DESIGN.md §4.13), then "
            f"register it under a new id. Nothing was changed")


def public(cluster: dict | None) -> dict:
    return {k: cluster.get(k) for k in ("id", "bootstrap", "state", "coordination")} if cluster else {}


def running_decommission(api: FedkafkaApi, cid: str) -> dict | None:
    """The controller's unfinished decommission run of `cid` (None also when it has no workflow API)."""
    try:
        runs = api.workflows() or []
    except ApiError as exc:
        if exc.status in (404, 405):
            return None
        raise
    return next((r for r in runs if r.get("kind") == "decommission" and r.get("cluster") == cid
                 and r.get("state") == "running"), None)


def planned_moves(module, api: FedkafkaApi, params: dict) -> list[str]:
    """Check mode: the moves the controller would plan for the decommission (none from an older controller)."""
    if not api.can_dry_run():
        module.warn("the controller has no workflow dry run (upgrade it): the moves are not listed")
        return []
    plan = api.start_workflow("decommission", params["id"], drain=params["drain"], dry_run=True) or {}
    return move_lines(plan.get("partitions_moved"))


def decommission(api: FedkafkaApi, params: dict, wrote: list, run: dict | None = None) -> dict | None:
    """Decommission, or with `run` wait for the one under way; appends to `wrote` on each write. Returns the
    workflow run (None from a controller without workflows)."""
    cid = params["id"]
    try:
        if run is None:
            run = api.start_workflow("decommission", cid, drain=params["drain"])
            wrote.append("workflow")
    except ApiError as exc:
        if exc.status not in (404, 405):
            raise
        run = None  # a controller without the workflow API: walk the states ourselves
        for state in ("read_only", "draining"):
            current = api.cluster(cid) or {}
            if STATE_ORDER.get(current.get("state", "active"), 0) < STATE_ORDER[state]:
                api.set_cluster_state(cid, state)
                wrote.append(state)
    if not params["wait"]:
        return run

    blocked = {"why": ""}

    def removed():
        if run and run.get("id") is not None:
            wf = api.workflow(run["id"]) or {}
            if wf.get("state") in ("failed", "error"):
                raise ApiError(f"decommission of {cid} failed: {wf.get('error') or wf}")
            phase = next((ph for ph in wf.get("phases") or [] if ph.get("state") != "done"), None)
            if phase:  # e.g. drain waits for consumer groups to commit past the seals (or for retention)
                blocked["why"] = (f"workflow {run['id']} still at phase {phase.get('name')} "
                                  f"({phase.get('done')}/{phase.get('total')})")
        elif (api.cluster(cid) or {}).get("state") != "removed":
            try:
                api.set_cluster_state(cid, "removed")
                wrote.append("removed")
            except ApiError as exc:
                if exc.status != 409:  # 409: segments still on it; try again
                    raise
                blocked["why"] = f"the controller says: {exc.body or exc}"
        return (api.cluster(cid) or {"state": "removed"}).get("state") == "removed"

    try:
        api.wait_until(removed, params["timeout"], interval=1.0, what=f"cluster {cid} to be removed")
    except ApiError as exc:
        raise ApiError(f"{exc}; {blocked['why']}" if blocked["why"] else str(exc)) from None
    return run


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "id": {"type": "str", "required": True, "aliases": ["name", "cluster"]},
            "bootstrap": {"type": "str"},
            "coordination": {"type": "bool"},
            "state": {"type": "str", "default": "present", "choices": ["present", "read_only", "absent"]},
            "drain": {"type": "bool", "default": False},
            **WAIT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    wrote: list[str] = []  # writes that reached the controller, so a later failure still reports a change
    try:
        current = read_or_predict(module, lambda: api.cluster(p["id"]))
        if current is None and p["state"] != "absent" and not p["bootstrap"]:
            module.fail_json(msg=f"cluster {p['id']} is not registered: bootstrap is required to register it")
        refusal = removed_refusal(current, p)
        if refusal:  # not a failure: site.yml run again after a decommission must stay idempotent
            module.exit_json(changed=False, actions=[], cluster=public(current), warnings=[refusal])
        running = None
        if p["state"] == "absent" and current and current.get("state") in ("read_only", "draining"):
            running = running_decommission(api, p["id"])  # read_only or draining: one may be under way
        steps = plan(current, p, running)
        actions = [desc for _, desc, _ in steps]
        changes = any(kind != "wait" for kind, _, _ in steps)
        before = public(current)
        after = dict(before)
        if changes:
            after.update({"id": p["id"]})
            if p["bootstrap"] and p["state"] != "absent":
                after["bootstrap"] = p["bootstrap"]
            if p["coordination"] is not None and p["state"] != "absent":
                after["coordination"] = p["coordination"]
            after["state"] = {"present": "active", "read_only": "read_only", "absent": "removed"}[p["state"]]
        diff = {"before": before, "after": after, "before_header": f"cluster {p['id']}",
                "after_header": f"cluster {p['id']}"}
        decommissions = any(kind == "decommission" for kind, _, _ in steps)
        if module.check_mode or not steps:
            moves = planned_moves(module, api, p) if decommissions else []
            if decommissions:
                diff["before"], diff["after"] = {**before, "moves": []}, {**after, "moves": moves}
            module.exit_json(changed=changes, actions=actions, moves=moves, cluster=current or {}, diff=diff)
        moves = []
        for kind, _, arg in steps:
            if kind == "put":
                api.put_cluster(p["id"], p["bootstrap"] or current["bootstrap"], p["coordination"])
                wrote.append("put")
            elif kind == "state":
                api.set_cluster_state(p["id"], arg)
                wrote.append(arg)
            elif kind == "wait":
                if p["wait"]:
                    decommission(api, p, wrote, run=arg)
            else:
                run = decommission(api, p, wrote)
                if run and run.get("id") is not None:
                    moves = move_lines((api.workflow(run["id"]) or {}).get("partitions_moved"))
                diff["before"], diff["after"] = {**before, "moves": []}, {**after, "moves": moves}
        module.exit_json(changed=bool(wrote), actions=actions, moves=moves, cluster=api.cluster(p["id"]) or {},
                         diff=diff)
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, changed=bool(wrote))


if __name__ == "__main__":
    main()
