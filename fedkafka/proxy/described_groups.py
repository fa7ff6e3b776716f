"""The operations a described group answers for the asking principal: what DescribeGroups and ConsumerGroupDescribe
share (handlers do not import each other: the import contract)."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from fedkafka.proxy.plan import Context, authorized_operations
from fedkafka.security.acl import ResourceType

# A described group's authorized_operations when they were not asked for, or the group is answered with an error (the
# schema's default: Kafka's Int.MinValue)
OPERATIONS_NOT_ANSWERED = i32(-2147483648)


def with_authorized_operations(ctx: Context, request, described: tuple) -> tuple:
    """The groups of a DescribeGroups (v3+) or ConsumerGroupDescribe answer, each answered without an error carrying
    the operations the asking principal may do on it (`authorized_operations`) when the request asks for them
    (include_authorized_operations), as KafkaApis.handleDescribeGroupsRequest and handleConsumerGroupDescribe set
    them; a group answered with an error keeps OPERATIONS_NOT_ANSWERED. The coordinator's own value is about the
    proxy's principal on the coordination cluster and is never passed on. Not asked: the groups as they are (the
    coordinator was not asked either and answered OPERATIONS_NOT_ANSWERED)."""
    if not getattr(request, "include_authorized_operations", False):
        return described
    return tuple(dataclasses.replace(g, authorized_operations=i32(authorized_operations(
        ctx, ResourceType.GROUP, g.group_id)) if g.error_code == ErrorCode.none else OPERATIONS_NOT_ANSWERED)
        for g in described)
