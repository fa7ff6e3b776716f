"""Cluster-level operations a federation has no use for, answered so that tools say why.

Replicas and partition leaders of the physical clusters are each cluster's own business; a logical partition's
leader is a proxy, always the preferred one. So AlterPartitionReassignments is refused with a message that
says where to do it, ListPartitionReassignments lists none, and ElectLeaders answers ELECTION_NOT_NEEDED.
As in Kafka, ElectLeaders and AlterPartitionReassignments need ALTER on the cluster, ListPartitionReassignments
DESCRIBE on it; a denial is CLUSTER_AUTHORIZATION_FAILED, at the top and on every partition named
(docs/DESIGN.md §11).
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, authorized
from fedkafka.security.acl import Operation, ResourceType

ELECT_LEADERS, ALTER_REASSIGNMENTS, LIST_REASSIGNMENTS = 43, 45, 46
API_KEYS = {ELECT_LEADERS: (0, 2), ALTER_REASSIGNMENTS: (0, 1), LIST_REASSIGNMENTS: (0, 0)}
ROLE = "any"
AUTHORIZES = True

NO_REASSIGNMENT = ("fedkafka places logical partitions on physical clusters itself (segment chains, moved by "
                   "scale-up and decommission); reassign replicas on each physical cluster directly")


def handle(ctx: Context, header, request):
    key = request.__api_key__
    version = type(request).__version__
    operation = Operation.DESCRIBE if key == LIST_REASSIGNMENTS else Operation.ALTER
    if not authorized(ctx, operation, ResourceType.CLUSTER):
        ctx.refused("auth", "*", -1, f"{operation.name} on the cluster")
        return _answer(ctx, key, version, request, ErrorCode.cluster_authorization_failed, None)
    if key == ALTER_REASSIGNMENTS:
        return _answer(ctx, key, version, request, ErrorCode.invalid_request, NO_REASSIGNMENT)
    return _answer(ctx, key, version, request, ErrorCode.none, None)


def _answer(ctx: Context, key: int, version: int, request, error: ErrorCode, message: str | None):
    """The answer with `error` at the top and on every partition the request named (Kafka's error responses)."""
    if key == ALTER_REASSIGNMENTS:
        return build(response_schema(key, version), {
            "error_code": error, "error_message": message,
            "responses": [{"name": t.name, "partitions": [
                {"partition_index": p.partition_index, "error_code": error, "error_message": message}
                for p in t.partitions]} for t in request.topics]})
    if key == LIST_REASSIGNMENTS:
        return build(response_schema(key, version), {"error_code": error, "error_message": message, "topics": []})
    wanted = request.topic_partitions or ()
    return build(response_schema(key, version), {"error_code": error, "replica_election_results": [
        {"topic": t.topic, "partition_result": [
            {"partition_id": p, "error_code": error if error != ErrorCode.none else _election(ctx, t.topic, p),
             "error_message": message if error != ErrorCode.none else "a proxy is always the preferred leader"}
            for p in t.partitions]} for t in wanted]})


def _election(ctx: Context, topic: str, partition: int) -> ErrorCode:
    if ctx.view.chain(topic, partition) is None:
        return ErrorCode.unknown_topic_or_partition
    return ErrorCode.election_not_needed
