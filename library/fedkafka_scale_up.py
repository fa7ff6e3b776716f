#!/usr/bin/python
"""Ansible module: run the scale-up workflow for a registered cluster and report what moved."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fedkafka_scale_up
short_description: Give a newly registered physical cluster its share of the federation's writes
description:
  - Starts the controller's scale-up workflow (C(POST /v1/workflows), kind C(scale_up)) for O(cluster)
    and, with O(wait=true), follows it (C(GET /v1/workflows/{id})) until it finishes.
  - C(rebalance) (default) moves the active segments of a fair share of logical partitions to the
    cluster; no key changes partition and no data is copied. C(expand) adds logical partitions on the
    cluster instead (keys re-hash; opt-in).
  - Idempotent. When the cluster already holds its fair share the workflow moves nothing and the
    module reports no change. Registering the cluster (O(bootstrap), first run) is a change, moves or not.
  - Check mode asks the controller for the run's plan (C(POST /v1/workflows?dry_run=true)), the moves it would
    make now, planned by the workflow's own planner, so C(--check --diff) shows exactly the partitions the run
    moves. A controller without dry runs (not listed in C(GET /v1/status) C(api_features)) gets an estimate
    from the segment chains instead, with a warning.
options:
  cluster:
    description: Id of an active cluster (see M(fedkafka_cluster)), or of one to register with O(bootstrap).
    type: str
    required: true
  bootstrap:
    description:
      - Bootstrap servers of a cluster not registered yet; the workflow registers it once it has checked that
        it answers and is not a cluster already registered. Ignored for a registered cluster.
    type: str
  strategy:
    description: How the new cluster gets its share.
    type: str
    choices: [rebalance, expand]
    default: rebalance
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
- name: Scale up onto c3
  fedkafka_scale_up:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    cluster: c3
    strategy: rebalance
    timeout: 1800
  register: scale_up

- name: Report
  ansible.builtin.debug:
    msg: "{{ scale_up.partitions_moved }} partitions now write to c3"
"""

RETURN = r"""
partitions_moved:
  description: Logical partitions whose active segment moved to the cluster (predicted in check mode).
  type: int
  returned: always
  sample: 4
active_before:
  description: Logical partitions whose active segment was on the cluster before the run.
  type: int
  returned: always
  sample: 0
moves:
  description: The partitions moved (planned, in check mode), as C(topic/partition from -> to) lines.
  type: list
  elements: str
  returned: always
  sample: ["orders/4: c1 -> c3"]
workflow:
  description: The workflow run as the controller reports it (in check mode, the controller's dry-run plan).
  type: dict
  returned: always
  sample: {"id": 3, "kind": "scale_up", "state": "done", "moved": 4}
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

DONE = ("done", "succeeded", "completed", "finished")
FAILED = ("failed", "error", "aborted")


def active_cluster(chain) -> str | None:
    """Cluster of a partition chain's active (last) segment; segments are lists or dicts."""
    segments = chain.get("segments") if isinstance(chain, dict) else chain
    if not segments:
        return None
    last = segments[-1]
    return last.get("cluster") if isinstance(last, dict) else last[0]


def share(api: FedkafkaApi, cluster: str) -> tuple[int, int, int]:
    """(partitions active on cluster, all partitions, active clusters)."""
    clusters = [c for c in api.clusters() or [] if c.get("state", "active") == "active"]
    on_cluster = total = 0
    for summary in api.topics() or []:
        topic = api.topic(summary["name"]) or {}
        chains = topic.get("chains", topic.get("partitions"))  # GET /v1/topics/{name}: "chains" of segments
        if not isinstance(chains, list):
            continue
        total += len(chains)
        on_cluster += sum(1 for c in chains if active_cluster(c) == cluster)
    return on_cluster, total, max(1, len(clusters))


def moved_count(workflow: dict) -> int:
    for key in ("moved", "partitions_moved"):
        if isinstance(workflow.get(key), int):
            return workflow[key]
        if isinstance(workflow.get(key), list):
            return len(workflow[key])
    return int((workflow.get("result") or {}).get("moved", 0)) if isinstance(workflow.get("result"), dict) else 0


def diff_of(cluster: str, before: int, moved: int, moves: list[str]) -> dict:
    key = "active_partitions_on_" + cluster
    return {"before": {key: before, "moves": []}, "after": {key: before + moved, "moves": moves}}


def predict(module, api: FedkafkaApi, current: dict | None) -> dict:
    """Check mode: the controller's dry-run plan; an estimate from the chains on a controller without one."""
    p = module.params
    before = share(api, p["cluster"])[0] if current else 0
    if not api.can_dry_run():
        module.warn("the controller has no workflow dry run (upgrade it): partitions_moved is an estimate")
        before, total, n_active = share(api, p["cluster"])
        predicted = max(0, total // n_active - before) if p["strategy"] == "rebalance" else (0 if before else 1)
        return {"changed": predicted > 0 or current is None, "partitions_moved": predicted, "active_before": before,
                "moves": [], "workflow": {}, "diff": diff_of(p["cluster"], before, predicted, [])}
    try:
        plan = api.start_workflow("scale_up", p["cluster"], strategy=p["strategy"], bootstrap=p["bootstrap"],
                                  dry_run=True) or {}
    except ApiError as exc:
        if current is not None or exc.status not in (404, 503):
            raise
        # --check of scale_up.yml: the brokers and the registration before this task were only predicted
        module.warn(f"check mode: cluster {p['cluster']} cannot be planned yet ({exc}); predicting a scale-up")
        return {"changed": True, "partitions_moved": 0, "active_before": 0, "moves": [], "workflow": {},
                "diff": diff_of(p["cluster"], 0, 0, [])}
    moves = move_lines(plan.get("partitions_moved"))
    return {"changed": bool(plan.get("changed")), "partitions_moved": plan.get("moved", 0), "active_before": before,
            "moves": moves, "workflow": plan, "diff": diff_of(p["cluster"], before, plan.get("moved", 0), moves)}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "cluster": {"type": "str", "required": True},
            "bootstrap": {"type": "str"},
            "strategy": {"type": "str", "default": "rebalance", "choices": ["rebalance", "expand"]},
            **WAIT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    try:
        current = read_or_predict(module, lambda: api.cluster(p["cluster"]))
        if current is None and module.check_mode and not p["bootstrap"]:
            # A --check run of scale_up.yml: the registration before this task was only predicted.
            module.warn(f"check mode: cluster {p['cluster']} is not registered yet; predicting a scale-up")
            module.exit_json(changed=True, partitions_moved=0, active_before=0, moves=[], workflow={})
        if current is None and not p["bootstrap"]:
            module.fail_json(msg=f"cluster {p['cluster']} is not registered: register it first (fedkafka_cluster) "
                                 "or pass its bootstrap")
        if current is not None and current.get("state", "active") != "active":
            module.fail_json(msg=f"cluster {p['cluster']} is {current.get('state')}, not active: only an active "
                                 "cluster can take writes")
        if module.check_mode:
            module.exit_json(**predict(module, api, current))
        before = share(api, p["cluster"])[0] if current else 0
        try:
            run = api.start_workflow("scale_up", p["cluster"], strategy=p["strategy"],
                                     bootstrap=None if current else p["bootstrap"]) or {}
        except ApiError as exc:
            if exc.status in (404, 405) and current is not None:
                raise ApiError(f"the controller at {api.base} has no workflow API (POST /v1/workflows "
                               f"answered {exc.status}): upgrade it to a version with scale-up workflows; "
                               f"cluster {p['cluster']} stays registered and active", status=exc.status) from None
            raise
        workflow = run
        if p["wait"] and run.get("state") not in DONE:
            def finished():
                wf = api.workflow(run["id"]) or {}
                if wf.get("state") in FAILED:
                    raise _WorkflowFailed(f"scale-up onto {p['cluster']} failed: {wf.get('error') or wf}")
                return wf if wf.get("state") in DONE else None
            workflow = api.wait_until(finished, p["timeout"], interval=0.5, what=f"scale-up onto {p['cluster']}")
        moved = moved_count(workflow)
        if not p["wait"] or ("moved" not in workflow and "partitions_moved" not in workflow):
            moved = max(moved, share(api, p["cluster"])[0] - before)
        # The controller's record says changed when the run registered the cluster or moved something; a
        # controller from before that record counts only moves, and this module knows it asked to register.
        changed = bool(workflow.get("changed")) or moved > 0 or current is None
        moves = move_lines(workflow.get("partitions_moved") if isinstance(workflow.get("partitions_moved"), list)
                           else [])
        module.exit_json(changed=changed, partitions_moved=moved, active_before=before, moves=moves,
                         workflow=workflow, diff=diff_of(p["cluster"], before, moved, moves))
    except _WorkflowFailed as exc:
        module.fail_json(msg=str(exc))
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


class _WorkflowFailed(Exception):
    pass


if __name__ == "__main__":
    main()
