"""A compact delta between two views: only the clusters, topics and proxies that changed.

A topic is the unit of change (a segment move rewrites one topic's entry). The delta is JSON, like
`View.to_dict()`, and `apply_delta(old, view_delta(old, new)) == new` (property-tested).
"""

from __future__ import annotations

from typing import Any

from fedkafka.view.model import View

_SCALARS = ("federation_id", "coordination_cluster", "commits_frozen", "allow_auto_create_topics")


class DeltaMismatch(ValueError):
    """The delta does not start at the view it is applied to: fetch the full view instead."""


def view_delta(old: View, new: View) -> dict[str, Any]:
    """Compares model objects first and serializes only what changed (a view holds thousands of chains)."""
    a, b = _head(old), _head(new)
    delta: dict[str, Any] = {"from_version": old.version, "version": new.version}
    for key in _SCALARS:
        if a[key] != b[key]:
            delta[key] = b[key]
    for key, before, after in (("clusters", old.clusters, new.clusters), ("topics", old.topics, new.topics)):
        upsert = [k for k, e in after.items() if before.get(k) != e]
        removed = sorted(k for k in before if k not in after)
        if upsert or removed:
            changed: dict[str, Any] = {key: {k: after[k] for k in upsert}}  # clusters= or topics=
            one = View(version=new.version, **changed).to_dict()[key]
            delta[key] = {"upsert": one, "removed": removed}
    if old.proxies != new.proxies:
        delta["proxies"] = View(version=new.version, proxies=new.proxies).to_dict()["proxies"]  # sent whole
    for key in ("credentials", "acls", "draining"):  # sent whole when they changed
        if getattr(old, key) != getattr(new, key):
            delta[key] = View(version=new.version, **{key: getattr(new, key)}).to_dict()[key]
    return delta


def _head(view: View) -> dict[str, Any]:
    return {"federation_id": view.federation_id, "coordination_cluster": view.coordination_cluster,
            "commits_frozen": view.commits_frozen, "allow_auto_create_topics": view.allow_auto_create_topics}


def apply_delta(old: View, delta: dict[str, Any]) -> View:
    if delta["from_version"] != old.version:
        raise DeltaMismatch(f"delta starts at view {delta['from_version']}, have {old.version}")
    d = old.to_dict()
    d["version"] = delta["version"]
    for key in _SCALARS:
        if key in delta:
            d[key] = delta[key]
    for key, ident in (("clusters", "id"), ("topics", "name")):
        change = delta.get(key)
        if not change:
            continue
        entries = {e[ident]: e for e in d[key]}
        for name in change["removed"]:
            entries.pop(name, None)
        for e in change["upsert"]:
            entries[e[ident]] = e
        d[key] = list(entries.values())
    for key in ("proxies", "credentials", "acls", "draining"):  # sent whole when they changed
        if key in delta:
            d[key] = delta[key]
    return View.from_dict(d)
