"""CreateAcls and DeleteAcls, written by the controller (`kafka-acls --add/--remove` through the proxy).

ACLs live in the config database, which only the controller writes: each request becomes calls to the admin API's
`/v1/acls` routes (the ones `fedkafka acl` uses), and the client is answered once this proxy serves the view that
holds the change, so a `kafka-acls --list` right after sees it. As in Kafka, both need ALTER on the cluster
(CLUSTER_AUTHORIZATION_FAILED on every creation or filter otherwise, nothing sent), and a proxy without
`--authorization` answers SECURITY_DISABLED: its anonymous clients must not write the ACLs the secured proxies of
the federation enforce (docs/DESIGN.md §11). A creation Kafka would refuse (a pattern or operation that is not
concrete, a cluster not named kafka-cluster, a resource type fedkafka has no ACLs for) is INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Call, Context, ControllerApi, ControllerRequest, Plan, admin_outcome, authorized
from fedkafka.security.acl import AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType

CREATE_ACLS, DELETE_ACLS = 30, 31
API_KEYS = {CREATE_ACLS: (1, 3), DELETE_ACLS: (1, 3)}
ROLE = "any"
NEEDS_CONTROLLER = True
AUTHORIZES = True

NO_AUTHORIZER = ("authorization is off on this proxy (--authorization): ACLs are changed through a proxy that "
                 "enforces them, or with fedkafka acl")


def handle(ctx: Context, header, request):
    key = request.__api_key__
    entries = request.creations if key == CREATE_ACLS else request.filters
    if ctx.authorizer is None:
        return _answer(key, request, [{"error_code": ErrorCode.security_disabled, "error_message": NO_AUTHORIZER}
                                      for _ in entries])
    if not authorized(ctx, Operation.ALTER, ResourceType.CLUSTER):
        ctx.refused("auth", "*", -1, "ALTER on the cluster")
        return _answer(key, request, [{"error_code": ErrorCode.cluster_authorization_failed, "error_message": None}
                                      for _ in entries])
    return create_acls(request) if key == CREATE_ACLS else delete_acls(request)


def _answer(key: int, request, results: list[dict[str, Any]]):
    field = "results" if key == CREATE_ACLS else "filter_results"
    if key == DELETE_ACLS:
        results = [{"matching_acls": [], **r} for r in results]
    return build(response_schema(key, type(request).__version__), {field: results})


# -- CreateAcls ------------------------------------------------------------------------------------------------

def create_acls(request):
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, AclBinding]] = []
    for c in request.creations:
        binding, problem = _binding(c)
        results.append({"error_code": ErrorCode.invalid_request if problem else ErrorCode.none,
                        "error_message": problem})
        if binding is not None:
            valid.append((len(results) - 1, binding))
    if not valid:
        return _answer(CREATE_ACLS, request, results)
    body = {"acls": [b.to_dict() for _, b in valid]}

    def finish(replies: list):
        code, message = admin_outcome(replies[0])
        for i, _b in valid:
            results[i].update(error_code=code, error_message=message)
        return _answer(CREATE_ACLS, request, results)

    return Plan([Call(ControllerApi(), ControllerRequest("POST", "/v1/acls", body))], finish)


def _binding(c) -> tuple[AclBinding | None, str | None]:
    """The binding a creation asks for, or why Kafka would refuse it."""
    try:
        b = AclBinding(ResourceType(c.resource_type), c.resource_name, PatternType(c.resource_pattern_type),
                       c.principal, c.host, Operation(c.operation), Permission(c.permission_type))
    except ValueError as e:
        return None, f"Invalid ACL creation: {e} (fedkafka has ACLs on topics, groups, the cluster and " \
                     "transactional ids)"
    problems = b.problems()
    return (None, "Invalid ACL creation: " + "; ".join(problems)) if problems else (b, None)


# -- DeleteAcls ------------------------------------------------------------------------------------------------

def delete_acls(request):
    results: list[dict[str, Any]] = []
    calls: list[tuple[int, Call]] = []
    for f in request.filters:
        results.append({"error_code": ErrorCode.none, "error_message": None, "matching_acls": []})
        try:
            acl_filter = AclFilter(ResourceType(f.resource_type_filter), f.resource_name_filter,
                                   PatternType(f.pattern_type_filter), f.principal_filter, f.host_filter,
                                   Operation(f.operation), Permission(f.permission_type))
        except ValueError as e:
            results[-1].update(error_code=ErrorCode.invalid_request, error_message=f"Invalid ACL filter: {e}")
            continue
        calls.append((len(results) - 1, Call(ControllerApi(), ControllerRequest("POST", "/v1/acls/delete",
                                                                                 _filter_body(acl_filter)))))
    if not calls:
        return _answer(DELETE_ACLS, request, results)

    def finish(replies: list):
        for (i, _call), reply in zip(calls, replies, strict=True):
            code, message = admin_outcome(reply)
            if code != ErrorCode.none:
                results[i].update(error_code=code, error_message=message)
                continue
            results[i]["matching_acls"] = [_matching(AclBinding.from_dict(d)) for d in reply.body["deleted"]]
        return _answer(DELETE_ACLS, request, results)

    return Plan([c for _, c in calls], finish)


def _filter_body(f: AclFilter) -> dict[str, Any]:
    """The admin API's filter: enum names, ANY and null fields left out (they match everything)."""
    enums = {"resource_type": f.resource_type, "pattern_type": f.pattern_type, "operation": f.operation,
             "permission": f.permission}
    names = {"name": f.name, "principal": f.principal, "host": f.host}
    return {k: v.name for k, v in enums.items() if v.name != "ANY"} | {k: v for k, v in names.items() if v is not None}


def _matching(b: AclBinding) -> dict[str, Any]:
    return {"error_code": ErrorCode.none, "error_message": None, "resource_type": b.resource_type,
            "resource_name": b.name, "pattern_type": b.pattern_type, "principal": b.principal, "host": b.host,
            "operation": b.operation, "permission_type": b.permission}
