"""An in-memory stand-in for the controller's admin API, for module unit tests only.

It answers FedkafkaApi.request(method, path, body) like the contract in docs/OPERATIONS.md does and
records every call, so a test can assert which writes a module made (and that check mode made none).
Integration tests run the modules against the real controller instead.
"""

from __future__ import annotations

import copy

from ansible_harness import ApiError


class FakeController:
    def __init__(self, clusters=None, topics=None, proxies=None, view_version=1, workflows=True, runs=None,
                 dry_run=True, drain_refusals=(), rules=None):
        self.clusters = {c["id"]: copy.deepcopy(c) for c in clusters or []}
        self.topics = {t["name"]: copy.deepcopy(t) for t in topics or []}
        self.proxies = copy.deepcopy(list(proxies or []))
        self.view_version = view_version
        self.workflows_supported = workflows
        self.dry_run_supported = dry_run  # listed in GET /v1/status api_features
        self.runs = {r["id"]: copy.deepcopy(r) for r in runs or []}  # runs a controller is already doing
        self.calls: list[tuple[str, str, object]] = []
        self.drain_refusals = set(drain_refusals)  # node ids the controller refuses to drain (another drain won)
        self.rules = {r["name"]: copy.deepcopy(r) for r in rules or []}  # client.id rules

    @property
    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]

    def request(self, method, path, body=None, ok_missing=False):
        self.calls.append((method, path, copy.deepcopy(body)))
        path, _, query = path.partition("?")
        parts = path.strip("/").split("/")[1:]
        if method == "GET" and parts == ["status"]:
            return {"view_version": self.view_version, "clusters": len(self.clusters),
                    "topics": len(self.topics), "proxies": self.proxies,
                    "api_features": ["workflow_dry_run"] if self.dry_run_supported else []}
        if parts[0] == "proxies" and method == "POST" and parts[2:] in (["drain"], ["undrain"]):
            return self._drain(int(parts[1]), parts[2] == "drain")
        if parts[0] == "clusters":
            return self._clusters(method, parts[1:], body)
        if parts[0] == "client-rules":
            return self._rules(method, parts[1:], body)
        if parts[0] == "topics":
            return self._topics(method, parts[1:], body, ok_missing)
        if parts[0] == "workflows":
            if not self.workflows_supported:
                raise ApiError("not found", status=404)
            if method == "POST" and body["kind"] in ("failover", "coordination_move"):
                return self._unclean(body, dry_run=query == "dry_run=true")
            registers = (method == "POST" and body["kind"] == "scale_up" and body["cluster"] not in self.clusters
                         and body.get("bootstrap"))
            if method == "POST" and query == "dry_run=true":
                moves = (self._scale_up(body["cluster"], apply=False) if body["kind"] == "scale_up"
                         else self._evacuation(body["cluster"]))
                return {"dry_run": True, "changed": bool(moves or registers), "registers": bool(registers),
                        "moved": len(moves), "partitions_moved": moves}
            if method == "POST":
                if registers:  # as the controller: a scale-up registers a new cluster first (its record, below,
                    # leaves out `changed`, as a controller from before it counted the registration did)
                    self._clusters("PUT", [body["cluster"]], {"bootstrap": body["bootstrap"]})
                cluster = self.clusters[body["cluster"]]
                if body["kind"] == "decommission":
                    cluster["state"] = "removed"
                    self.workflow_result = {"id": 1, "state": "done"}
                else:
                    moves = self._scale_up(body["cluster"])
                    self.workflow_result = {"id": 1, "state": "done", "moved": len(moves), "partitions_moved": moves}
                return {"id": 1, "state": "running"}
            if len(parts) == 1:
                return list(self.runs.values())
            if int(parts[1]) in self.runs:  # an earlier run finishes while the module waits for it
                run = self.runs[int(parts[1])]
                self.clusters[run["cluster"]]["state"] = "removed"
                return {**run, "state": "done"}
            return self.workflow_result
        raise AssertionError(f"unexpected call {method} {path}")

    def _rules(self, method, parts, body):
        """Like the controller: GET lists the rules by name, PUT sets one and says whether it changed, and refuses
        (409) a second rule for one match and pattern."""
        if method == "GET" and not parts:
            return [self.rules[name] for name in sorted(self.rules)]
        if method == "PUT" and len(parts) == 1:
            rule = {"name": parts[0], "match": body["match"], "pattern": body["pattern"], "pool": body["pool"]}
            holder = next((r["name"] for r in self.rules.values() if r["name"] != parts[0]
                           and (r["match"], r["pattern"]) == (rule["match"], rule["pattern"])), None)
            if holder is not None:  # one rule per match and pattern (Controller.put_rule)
                raise ApiError(f"client rule {holder!r} already has match {rule['match']} pattern "
                               f"{rule['pattern']!r}: set that rule to change its pool, or delete it first", status=409)
            changed = self.rules.get(parts[0]) != rule
            self.rules[parts[0]] = rule
            return {"rule": rule, "changed": changed}
        raise AssertionError(f"unexpected call {method} /v1/client-rules/{'/'.join(parts)}")

    def _drain(self, node_id, draining):
        """Like the controller: a new view when the drain state changes, every proxy applies it at once."""
        proxy = next(p for p in self.proxies if p["node_id"] == node_id)
        if draining and node_id in self.drain_refusals:
            raise refused(409, f"proxy {node_id} ({proxy['instance_id']}) is the last live {proxy['role']} of pool "
                               f"{proxy['pool']!r}: draining it would leave its partitions without a leader")
        changed = bool(proxy.get("draining")) != draining
        if changed:
            proxy["draining"] = draining
            self.view_version += 1
            for p in self.proxies:
                p["applied_version"] = self.view_version
        return {"node_id": node_id, "draining": draining, "changed": changed, "view_version": self.view_version}

    def _scale_up(self, cid, apply=True):
        """Move active segments to cid until it holds its fair share (what the real workflow promises);
        returns the moves (made only with apply)."""
        chains = [(t["name"], c) for t in self.topics.values() for c in t.get("chains", [])]
        active = [c for c in self.clusters.values() if c["state"] == "active"]
        fair = len(chains) // max(1, len(active))
        have = sum(1 for _, c in chains if c["segments"][-1]["cluster"] == cid)
        moves = []
        for topic, chain in chains:
            if have + len(moves) >= fair:
                break
            if chain["segments"][-1]["cluster"] != cid:
                moves.append({"topic": topic, "partition": chain["partition"],
                              "from": chain["segments"][-1]["cluster"], "to": cid})
                if apply:
                    chain["segments"].append({"cluster": cid, "topic": "t", "partition": 0, "phys_start": 0,
                                              "phys_end": None, "logical_base": 0})
        return moves

    def _unclean(self, body, dry_run):
        """A failover or coordination move with the controller's refusals (docs/DESIGN.md §9, §10): the plan, or
        the run, done at once (GET /v1/workflows/1 then reports it)."""
        cid = body["cluster"]
        if cid not in self.clusters:
            raise refused(404, f"unknown cluster {cid!r}")
        holder = next(c["id"] for c in self.clusters.values() if c.get("coordination"))
        if body["kind"] == "coordination_move":
            plan = {"from": holder, "changed": holder != cid, "states": [f"coordination {holder} -> {cid}"]
                    if holder != cid else [], "partitions_moved": []}
            if not dry_run and plan["changed"]:
                for c in self.clusters.values():
                    c["coordination"] = c["id"] == cid
                plan["groups"] = 2
        else:
            cluster = self.clusters[cid]
            if cid == holder:
                raise refused(409, f"cluster {cid} is the coordination cluster: move that role first")
            moves = self._evacuation(cid)
            if cluster["reachable"] and moves:
                raise refused(409, f"cluster {cid} is reachable: decommission it")
            # a dead cluster a decommission made read_only (`given_up` false; a controller from before the mark names
            # none) is only marked given up; one that answers is left as it is (docs/DESIGN.md §9.1, §9.2)
            mark = cluster["state"] in ("read_only", "draining") and cluster.get("given_up") is False \
                and not cluster["reachable"]
            states = ["active -> read_only"] if cluster["state"] == "active" else ["given up"] if mark else []
            plan = {"states": states, "partitions_moved": moves, "moved": len(moves), "changed": bool(states or moves)}
            if not dry_run:
                cluster["state"] = "read_only" if cluster["state"] == "active" else cluster["state"]
                if states and ("given_up" in cluster or mark):
                    cluster["given_up"] = True
                for t in self.topics.values():
                    for chain in t.get("chains", []):
                        if chain["segments"][-1]["cluster"] == cid:
                            chain["segments"].append({**chain["segments"][-1], "cluster": self._live(cid)})
        if dry_run:
            return {"dry_run": True, "kind": body["kind"], "cluster": cid, "running": None, **plan}
        self.workflow_result = {"id": 1, "kind": body["kind"], "cluster": cid, "state": "done", **plan}
        return {"id": 1, "kind": body["kind"], "cluster": cid, "state": "running", "changed": False}

    def _live(self, cid):
        return next(c["id"] for c in self.clusters.values() if c["id"] != cid and c["state"] == "active")

    def _evacuation(self, cid):
        """Every partition active on cid, to the first other active cluster (a stand-in for the real plan)."""
        to = self._live(cid)
        return [{"topic": t["name"], "partition": c["partition"], "from": cid, "to": to}
                for t in self.topics.values() for c in t.get("chains", []) if c["segments"][-1]["cluster"] == cid]

    def _clusters(self, method, parts, body):
        if method == "GET" and not parts:
            return list(self.clusters.values())
        cid = parts[0]
        if method == "PUT":
            entry = self.clusters.setdefault(cid, {"id": cid, "state": "active", "reachable": True,
                                                    "coordination": False})
            entry["bootstrap"] = body["bootstrap"]
            if "coordination" in body:
                entry["coordination"] = body["coordination"]
            self.view_version += 1
            return {"cluster": entry, "changed": True}
        if method == "POST" and parts[1:] == ["state"]:
            if cid not in self.clusters:
                raise ApiError(f"unknown cluster {cid}", status=404)
            self.clusters[cid]["state"] = body["state"]
            self.view_version += 1
            return {"cluster": self.clusters[cid]}
        raise AssertionError(f"unexpected clusters call {method} {parts}")

    def _topics(self, method, parts, body, ok_missing):
        if method == "GET" and not parts:
            return list(self.topics.values())
        name = parts[0]
        if method == "GET":
            if name not in self.topics:
                if ok_missing:
                    return None
                raise ApiError("not found", status=404)
            return self.topics[name]
        if method == "PUT":
            old = self.topics.get(name)
            if old and body["partitions"] < old["partitions"]:
                raise ApiError("cannot shrink", status=409)
            self.topics[name] = {"name": name, **body}
            return {"topic": self.topics[name], "changed": True}
        if method == "DELETE":
            return self.topics.pop(name, None) and None
        raise AssertionError(f"unexpected topics call {method} {parts}")


def refused(status: int, detail: str) -> ApiError:
    """What FedkafkaApi raises for an error answer of POST /v1/workflows."""
    return ApiError(f"POST /v1/workflows: HTTP {status}: {detail}", status=status, body=detail)
