"""DescribeAcls from the view's ACLs (`kafka-acls --list` through the proxy); needs DESCRIBE on the cluster.

A proxy without `--authorization` answers SECURITY_DISABLED, as a Kafka broker without an authorizer does: it
enforces no ACL, so listing the view's would tell its clients about rules that do not apply to them
(docs/DESIGN.md §11).

CreateAcls and DeleteAcls change the config database, which only the controller writes: `acl_admin.py` forwards
them to the controller (docs/DESIGN.md §11).
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, authorized
from fedkafka.security.acl import AclFilter, Operation, PatternType, Permission, ResourceType

API_KEYS = {29: (1, 3)}
ROLE = "any"
AUTHORIZES = True

NO_AUTHORIZER = "authorization is off on this proxy (--authorization): it enforces no ACL"


def handle(ctx: Context, header, request):
    resp_t = response_schema(29, type(request).__version__)
    if ctx.authorizer is None:
        return build(resp_t, {"error_code": ErrorCode.security_disabled, "error_message": NO_AUTHORIZER,
                              "resources": []})
    if not authorized(ctx, Operation.DESCRIBE, ResourceType.CLUSTER):
        return build(resp_t, {"error_code": ErrorCode.cluster_authorization_failed, "error_message": None,
                              "resources": []})
    try:
        acl_filter = AclFilter(ResourceType(request.resource_type_filter), request.resource_name_filter,
                               PatternType(request.pattern_type_filter), request.principal_filter,
                               request.host_filter, Operation(request.operation),
                               Permission(request.permission_type))
    except ValueError as e:
        return build(resp_t, {"error_code": ErrorCode.invalid_request, "error_message": str(e), "resources": []})
    resources: dict[tuple[int, str, int], list[dict]] = {}
    for b in ctx.view.acls:
        if acl_filter.matches(b):
            resources.setdefault((b.resource_type, b.name, b.pattern_type), []).append(
                {"principal": b.principal, "host": b.host, "operation": b.operation,
                 "permission_type": b.permission})
    return build(resp_t, {"error_code": ErrorCode.none, "error_message": None, "resources": [
        {"resource_type": rt, "resource_name": name, "pattern_type": pt, "acls": acls}
        for (rt, name, pt), acls in resources.items()]})
