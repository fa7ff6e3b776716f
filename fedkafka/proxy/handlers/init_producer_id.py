"""InitProducerId: logical producer ids for idempotent producers; transactions are refused.

A logical id comes from the controller-allocated block (`ctx.producer_ids.next_logical`); the physical
ids per cluster are obtained lazily by the produce handler (docs/DESIGN.md §5.3). A transactional id is
answered TRANSACTIONAL_ID_AUTHORIZATION_FAILED (non-retriable, so clients fail fast with a clear error)
until transactions are implemented. A producer id without its epoch, or an epoch without an id, is
INVALID_REQUEST, as Kafka answers it. A KIP-360 bump (an id and its epoch) is answered a new id, epoch 0, as Kafka
answers a request without a transactional id: the id named may be another client's.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, authorized, connection_producers
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
    # A KIP-360 bump (an id and its epoch) gets a new id, epoch 0, as from Kafka (TransactionCoordinator.
    # handleInitProducerId: no transactional id, "blindly" a new producer id): the proxy cannot tell the id's holder
    # from a client naming it, and bumping it gave that client the holder's next epoch, which the holder's own bump
    # then got too: two producers in one sequence space (docs/DESIGN.md §5.3).
    logical = ctx.producer_ids.next_logical()
    if logical is None:
        return build(resp_t, {"error_code": ErrorCode.coordinator_not_available, "producer_id": -1,
                              "producer_epoch": -1})
    ctx.producer_ids.vouch(connection_producers(ctx.session), logical, 0)  # given here (§5.4, "The batch's CRC")
    return build(resp_t, {"error_code": ErrorCode.none, "producer_id": logical, "producer_epoch": 0})
