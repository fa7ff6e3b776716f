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
    module reports no change.
  - Check mode reads the topics' segment chains and predicts how many partitions would move.
options:
  cluster:
    description: Id of a registered, active cluster (see M(fedkafka_cluster)).
    type: str
    required: true
  strategy:
    description: How the new cluster gets its share.
    type: str
    choices: [rebalance, expand]
    default: rebalance
  wait:
    description: Wait until the workflow finished.
    type: bool
    default: true
  timeout:
    description: Seconds to wait.
    type: int
    default: 600
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
- name: Scale up onto c3
  fedkafka_scale_up:
    controller_url: http://127.0.0.1:8780
    token: "{{ fedkafka_api_token }}"
    cluster: c3
    strategy: rebalance
    timeout: 900
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
workflow:
  description: The workflow run as the controller reports it (empty in check mode).
  type: dict
  returned: always
  sample: {"id": 3, "kind": "scale_up", "state": "done", "moved": 4}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.fedkafka_api import (  # noqa: E402
    API_ARGUMENT_SPEC,
    ApiError,
    FedkafkaApi,
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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **API_ARGUMENT_SPEC,
            "cluster": {"type": "str", "required": True},
            "strategy": {"type": "str", "default": "rebalance", "choices": ["rebalance", "expand"]},
            "wait": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )
    p = module.params
    api = FedkafkaApi.from_module(module)
    try:
        current = read_or_predict(module, lambda: api.cluster(p["cluster"]))
        if current is None and module.check_mode:
            # A --check run of scale_up.yml: the registration before this task was only predicted.
            module.warn(f"check mode: cluster {p['cluster']} is not registered yet; predicting a scale-up")
            module.exit_json(changed=True, partitions_moved=0, active_before=0, workflow={})
        if current is None:
            module.fail_json(msg=f"cluster {p['cluster']} is not registered: register it first (fedkafka_cluster)")
        if current.get("state", "active") != "active":
            module.fail_json(msg=f"cluster {p['cluster']} is {current.get('state')}, not active: only an active "
                                 "cluster can take writes")
        before, total, n_active = share(api, p["cluster"])
        fair = total // n_active
        predicted = max(0, fair - before) if p["strategy"] == "rebalance" else (0 if before else 1)
        diff = {"before": {"active_partitions_on_" + p["cluster"]: before},
                "after": {"active_partitions_on_" + p["cluster"]: before + predicted}}
        if module.check_mode:
            module.exit_json(changed=predicted > 0, partitions_moved=predicted, active_before=before,
                             workflow={}, diff=diff)
        try:
            run = api.start_workflow("scale_up", p["cluster"], strategy=p["strategy"]) or {}
        except ApiError as exc:
            if exc.status in (404, 405):
                raise ApiError(f"the controller at {p['controller_url']} has no workflow API (POST /v1/workflows "
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
        changed = bool(workflow.get("changed", moved > 0))
        diff["after"] = {"active_partitions_on_" + p["cluster"]: before + moved}
        module.exit_json(changed=changed, partitions_moved=moved, active_before=before, workflow=workflow, diff=diff)
    except _WorkflowFailed as exc:
        module.fail_json(msg=str(exc))
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)


class _WorkflowFailed(Exception):
    pass


if __name__ == "__main__":
    main()
