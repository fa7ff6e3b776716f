"""InitProducerId: logical producer ids for idempotent producers; transactions are refused.

A logical id comes from the controller-allocated block (`ctx.producer_ids.next_logical`); the physical
ids per cluster are obtained lazily by the produce handler (docs/DESIGN.md §5.3). A transactional id is
answered TRANSACTIONAL_ID_AUTHORIZATION_FAILED (non-retriable, so clients fail fast with a clear error)
until transactions are implemented. A producer id without its epoch, or an epoch without an id, is
INVALID_REQUEST, as Kafka answers it: taken as a bump from epoch -1 it would hand the id's holder's first epoch to
a second producer.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, authorized
from fedkafka.security.acl import Operation, ResourceType

API_KEYS = {22: (0, 5)}
ROLE = "produce"
AUTHORIZES = True
NO_PRODUCER_ID, NO_PRODUCER_EPOCH = -1, -1


def handle(ctx: Context, header, request):
    resp_t = response_schema(22, type(request).__version__)
    if request.transactional_id is not None:
        return build(resp_t, {"error_code": ErrorCode.transactional_id_authorization_failed,
                              "producer_id": -1, "producer_epoch": -1})
    if not (ctx.authorizer is None or authorized(ctx, Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER)
            or ctx.authorizer.allowed_any(ctx.session.principal, ctx.session.host, Operation.WRITE,
                                          ResourceType.TOPIC)):  # Kafka: idempotence needs a write right somewhere
        return build(resp_t, {"error_code": ErrorCode.cluster_authorization_failed, "producer_id": -1,
                              "producer_epoch": -1})
    previous = getattr(request, "producer_id", -1)  # v3+ (KIP-360); -1 and -1: a new producer
    previous_epoch = getattr(request, "producer_epoch", -1)
    if (previous == NO_PRODUCER_ID) != (previous_epoch == NO_PRODUCER_EPOCH):  # KafkaApis.handleInitProducerIdRequest
        return build(resp_t, {"error_code": ErrorCode.invalid_request, "producer_id": -1, "producer_epoch": -1})
    if previous >= 0:
        # KIP-360 epoch bump of an id we handed out: same logical id, next epoch -> fresh physical ids
        epoch = previous_epoch + 1
        if epoch < 32767:
            return build(resp_t, {"error_code": ErrorCode.none, "producer_id": previous, "producer_epoch": epoch})
    logical = ctx.producer_ids.next_logical()
    if logical is None:
        return build(resp_t, {"error_code": ErrorCode.coordinator_not_available, "producer_id": -1,
                              "producer_epoch": -1})
    return build(resp_t, {"error_code": ErrorCode.none, "producer_id": logical, "producer_epoch": 0})
