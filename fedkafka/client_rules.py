"""Which pool a client.id belongs to: the one matching function the controller (`GET /v1/proxies`) and the name
service (matching the controller's rules locally, fedkafka/nameservice/resolver.py) both use, so they cannot
disagree. A rule is a mapping with `match` ("exact" or "prefix"), `pattern` and `pool`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_POOL = "default"


def pool_for(client_id: str, rules: Iterable[Mapping[str, str]]) -> str:
    """An exact rule, then the longest prefix rule (of equally long ones the first given: the controller gives them
    by name), then pool "default"."""
    longest: Mapping[str, str] | None = None
    for rule in rules:
        if rule["match"] == "exact" and rule["pattern"] == client_id:
            return rule["pool"]
        if rule["match"] == "prefix" and client_id.startswith(rule["pattern"]) and (
                longest is None or len(rule["pattern"]) > len(longest["pattern"])):
            longest = rule
    return longest["pool"] if longest is not None else DEFAULT_POOL
