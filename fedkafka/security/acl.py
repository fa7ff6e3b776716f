"""ACLs on logical resources and the authorizer the proxy consults before any upstream call (docs/DESIGN.md §11).

Kafka's model and codes (so CreateAcls/DescribeAcls bodies and `kafka-acls` output map one to one): a binding
allows or denies one principal (`User:alice`, `User:*`) from one host (`*`: any) one operation on a resource
(topic, group, cluster, transactional id) named literally (`*`: every one) or by prefix. As Kafka's
StandardAuthorizer: super users may do anything; a matching DENY wins over any ALLOW; READ, WRITE, DELETE and
ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS; with no matching ALLOW the answer is no.

Hosts: Kafka matches a binding's host, as a string, against `InetAddress.getHostAddress()` of the client, which
writes IPv6 uncompressed (`0:0:0:0:0:0:0:1`) and an IPv4-mapped IPv6 address as IPv4. The authorizer compares
both sides in that form (`kafka_host`), so a binding written either way (`::1` or Kafka's) names the same client;
the bindings themselves, as DescribeAcls answers them, keep the host as written.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ResourceType(IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    ANY = 1
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"  # the one cluster resource's name, as in Kafka
NAME_MAX = 256  # characters of a name, principal, host: controller.models.AclRow's columns (a test keeps them equal)
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
# the resource name Kafka's Authorizer.authorizeByResourceType asks `authorize` about first ("Check a hard-coded
# name to ensure that super users are granted access regardless of DENY ACLs")
BY_TYPE_PROBE_NAME = "hardcode"
BINDING_FIELDS = ("resource_type", "name", "pattern_type", "principal", "host", "operation", "permission")
# The operations a describe's authorized_operations bit field reports on each resource type (Kafka's
# AclEntry.supportedOperations, which AuthHelper.authorizedOperations asks the authorizer about one by one)
SUPPORTED_OPERATIONS = {
    ResourceType.TOPIC: (Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE, Operation.DELETE,
                         Operation.ALTER, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS),
    ResourceType.GROUP: (Operation.READ, Operation.DESCRIBE, Operation.DELETE, Operation.DESCRIBE_CONFIGS,
                         Operation.ALTER_CONFIGS),
    ResourceType.CLUSTER: (Operation.CREATE, Operation.CLUSTER_ACTION, Operation.DESCRIBE_CONFIGS,
                           Operation.ALTER_CONFIGS, Operation.IDEMPOTENT_WRITE, Operation.ALTER, Operation.DESCRIBE),
    ResourceType.TRANSACTIONAL_ID: (Operation.DESCRIBE, Operation.WRITE),
}
_IMPLIES = {Operation.DESCRIBE: (Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER),
            Operation.DESCRIBE_CONFIGS: (Operation.ALTER_CONFIGS,)}


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def problems(self) -> list[str]:
        """Why this binding cannot be stored (Kafka refuses the same ones)."""
        out = []
        if self.resource_type in (ResourceType.ANY,) or self.pattern_type not in (PatternType.LITERAL,
                                                                                   PatternType.PREFIXED):
            out.append("resource type and pattern type must be concrete (LITERAL or PREFIXED)")
        if self.operation == Operation.ANY or self.permission == Permission.ANY:
            out.append("operation and permission must be concrete")
        if not self.name or not self.host or ":" not in self.principal:
            out.append("name, host and a principal of the form Type:name are required")
        if self.resource_type == ResourceType.CLUSTER and self.name != CLUSTER_NAME:
            out.append(f"the cluster resource is named {CLUSTER_NAME}")
        texts = (self.name, self.principal, self.host)
        if any(len(t) > NAME_MAX for t in texts):
            out.append(f"name, principal and host are at most {NAME_MAX} characters")
        if any("\x00" in t for t in texts):
            out.append("name, principal and host must not contain NUL characters")
        return out

    def to_dict(self) -> dict[str, str]:
        """The admin API's form (`/v1/acls`): field names and enum names."""
        return dict(zip(BINDING_FIELDS, self.to_list(), strict=True))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AclBinding:
        return cls.from_list([d[f] for f in BINDING_FIELDS])

    def to_list(self) -> list[Any]:
        return [self.resource_type.name, self.name, self.pattern_type.name, self.principal, self.host,
                self.operation.name, self.permission.name]

    @classmethod
    def from_list(cls, v: list[Any]) -> AclBinding:
        return cls(ResourceType[v[0]], str(v[1]), PatternType[v[2]], str(v[3]), str(v[4]), Operation[v[5]],
                   Permission[v[6]])


@dataclass(frozen=True, slots=True)
class AclFilter:
    """What DescribeAcls/DeleteAcls select: None or ANY matches everything in that field. MATCH selects the
    bindings that would apply to the named resource (literal, wildcard and matching prefixes)."""

    resource_type: ResourceType = ResourceType.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, b: AclBinding) -> bool:
        return ((self.resource_type == ResourceType.ANY or b.resource_type == self.resource_type)
                and self._resource_matches(b)
                and (self.principal is None or b.principal == self.principal)
                and (self.host is None or b.host == self.host)
                and (self.operation == Operation.ANY or b.operation == self.operation)
                and (self.permission == Permission.ANY or b.permission == self.permission))

    def _resource_matches(self, b: AclBinding) -> bool:
        if self.pattern_type == PatternType.MATCH:
            return self.name is None or _applies(b, self.name)
        if self.pattern_type not in (PatternType.ANY, b.pattern_type):
            return False
        return self.name is None or b.name == self.name


def _applies(b: AclBinding, name: str) -> bool:
    if b.pattern_type == PatternType.PREFIXED:
        return name.startswith(b.name)
    return b.name == name or b.name == WILDCARD


@functools.lru_cache(maxsize=4096)
def kafka_host(host: str) -> str:
    """`host` as Kafka writes a client's address (Java's InetAddress.getHostAddress): an IPv6 address uncompressed,
    each group in lower-case hex without leading zeros, its zone kept (`fe80:0:0:0:0:0:0:1%eth0`); an IPv4-mapped
    one as its IPv4 address (Java makes it an Inet4Address). Anything that is no IP address (`*`, a name) as is."""
    address, percent, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv4Address):
        return host if percent else str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ":".join(f"{int(group, 16):x}" for group in ip.exploded.split(":")) + percent + zone


class Authorizer:
    """Built once per view: bindings indexed by resource type, the check is a scan of that type's bindings. The
    index holds the bindings with their hosts in Kafka's form (`kafka_host`); the view keeps them as written."""

    def __init__(self, bindings: tuple[AclBinding, ...], super_users: frozenset[str] = frozenset()):
        self.super_users = super_users
        self._by_type: dict[ResourceType, list[AclBinding]] = defaultdict(list)
        for b in bindings:
            self._by_type[b.resource_type].append(dataclasses.replace(b, host=kafka_host(b.host)))

    def _applicable(self, principal: str, host: str, resource_type: ResourceType) -> list[AclBinding]:
        """The type's bindings for this principal (or every one, `User:*`) from this host (or any, `*`)."""
        host = kafka_host(host)
        return [b for b in self._by_type.get(resource_type, ())
                if b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, WILDCARD)]

    def allowed(self, principal: str, host: str, operation: Operation, resource_type: ResourceType,
                name: str) -> bool:
        if principal in self.super_users:
            return True
        host = kafka_host(host)
        found = [b for b in self._by_type.get(resource_type, ()) if _applies(b, name)
                 and b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, WILDCARD)]
        if any(b.permission == Permission.DENY and b.operation in (operation, Operation.ALL) for b in found):
            return False
        wanted = (operation, Operation.ALL, *_IMPLIES.get(operation, ()))
        return any(b.permission == Permission.ALLOW and b.operation in wanted for b in found)

    def allowed_any(self, principal: str, host: str, operation: Operation, resource_type: ResourceType) -> bool:
        """Whether some resource of the type may be acted on (Kafka's idempotent write: WRITE on any topic), as
        Kafka's `Authorizer.authorizeByResourceType` decides it (its default, which StandardAuthorizer keeps):
        yes when `allowed` on the literal name `hardcode` (a super user); no when a DENY of the operation (or ALL)
        names the literal `*`; yes when an ALLOW names the literal `*`, or when any other ALLOW's name is not
        dominated by a DENY: for a literal, a DENY of the same literal name; for either, a prefixed DENY of a
        prefix of its name (the name itself included). Operations imply none here, as in Kafka."""
        if self.allowed(principal, host, operation, resource_type, BY_TYPE_PROBE_NAME):
            return True
        denied: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        allows: list[AclBinding] = []
        for b in self._applicable(principal, host, resource_type):
            if b.operation not in (operation, Operation.ALL):
                continue
            if b.permission == Permission.DENY:
                if b.pattern_type == PatternType.LITERAL and b.name == WILDCARD:
                    return False
                denied[b.pattern_type].add(b.name)
            elif b.permission == Permission.ALLOW:
                allows.append(b)
        if any(b.pattern_type == PatternType.LITERAL and b.name == WILDCARD for b in allows):
            return True
        return any(not _dominated(b, denied) for b in allows)


def _dominated(allow: AclBinding, denied: dict[PatternType, set[str]]) -> bool:
    """Whether a DENY covers every resource `allow` names (authorizeByResourceType's "dominant" deny)."""
    if allow.pattern_type == PatternType.LITERAL and allow.name in denied[PatternType.LITERAL]:
        return True
    return any(allow.name[:end] in denied[PatternType.PREFIXED] for end in range(1, len(allow.name) + 1))
