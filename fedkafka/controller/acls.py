"""ACL bindings in the config database: create, list and delete by filter; they reach proxies with the view."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedkafka.controller.errors import Invalid
from fedkafka.controller.models import AclRow
from fedkafka.security.acl import AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType

FIELDS = ("resource_type", "name", "pattern_type", "principal", "host", "operation", "permission")


def binding_from_dict(d: dict[str, Any]) -> AclBinding:
    """`{"resource_type": "TOPIC", "name": ..., "pattern_type": "LITERAL", "principal": "User:alice", "host": "*",
    "operation": "READ", "permission": "ALLOW"}` (host defaults to `*`, pattern_type to LITERAL)."""
    try:
        b = AclBinding(ResourceType[str(d["resource_type"]).upper()], str(d["name"]),
                       PatternType[str(d.get("pattern_type", "LITERAL")).upper()], str(d["principal"]),
                       str(d.get("host", "*")), Operation[str(d["operation"]).upper()],
                       Permission[str(d.get("permission", "ALLOW")).upper()])
    except KeyError as e:
        raise Invalid(f"an ACL needs resource_type, name, principal and operation; bad or missing {e}") from None
    problems = b.problems()
    if problems:
        raise Invalid("; ".join(problems))
    return b


def filter_from_dict(d: dict[str, Any]) -> AclFilter:
    try:
        return AclFilter(ResourceType[str(d.get("resource_type") or "ANY").upper()], d.get("name"),
                         PatternType[str(d.get("pattern_type") or "ANY").upper()], d.get("principal"), d.get("host"),
                         Operation[str(d.get("operation") or "ANY").upper()],
                         Permission[str(d.get("permission") or "ANY").upper()])
    except KeyError as e:
        raise Invalid(f"unknown value {e} in the ACL filter") from None


def binding_dict(b: AclBinding) -> dict[str, str]:
    return dict(zip(FIELDS, b.to_list(), strict=True))


def _binding(r: AclRow) -> AclBinding:
    return AclBinding.from_list([getattr(r, f) for f in FIELDS])


def all_bindings(s: Session) -> tuple[AclBinding, ...]:
    return tuple(sorted(_binding(r) for r in s.scalars(select(AclRow))))


def create(s: Session, bindings: list[AclBinding]) -> list[AclBinding]:
    """Adds the bindings not stored yet; returns those it added."""
    have = set(all_bindings(s))
    added = [b for b in dict.fromkeys(bindings) if b not in have]
    for b in added:
        s.add(AclRow(**binding_dict(b)))
    return added


def delete(s: Session, acl_filter: AclFilter) -> list[AclBinding]:
    gone = []
    for r in s.scalars(select(AclRow)):
        b = _binding(r)
        if acl_filter.matches(b):
            s.delete(r)
            gone.append(b)
    return sorted(gone)
