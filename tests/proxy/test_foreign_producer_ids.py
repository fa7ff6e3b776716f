"""A client touching the state of a producer id it was never given (docs/DESIGN.md §5.3, §5.4 "The batch's CRC").

1. A batch whose CRC-32C fails has a header nobody vouches for: its producer id and epoch may be damaged, or forged by
   a hostile client with WRITE on the topic. Remembered under the producer id it claims, it refused that producer's
   batches: at no sequence (nothing of the victim forwarded here on the partition yet), every batch of the victim the
   broker does not check, 30 s after each corrupt batch, for as long as they came; at the victim's end forwarded, its
   batches past it (back from another proxy) for as long. Now such a batch touches the producer table only under an id
   the connection vouches for (InitProducerId gave it there, or a batch of it whose CRC held came on it); otherwise it
   is held against the connection that sent it: only its own batches wait.
2. InitProducerId with a producer id and epoch but no transactional id: Kafka (TransactionCoordinator.
   handleInitProducerId, transactionalId == null) "blindly" answers a new producer id, epoch 0. The proxy bumped the
   epoch of whatever id it was named, so a client naming another's id got that id's next epoch: the holder's own bump
   then gave it the same (id, epoch), and two producers wrote one sequence space through one physical id.
"""

from __future__ import annotations

import datetime
from dataclasses import replace

from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.static.primitive import i32Timedelta

from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable
from fedkafka.proxy.handlers import init_producer_id
from fedkafka.security.session import Session
from proxy.test_handlers import _through, by_partition, ctx, produce_req
from proxy.test_handlers import batch as one_record

VICTIM = 1000  # the first id of the block: ids come from controller blocks in order, so they are easy to guess


def _code(c, parts: dict[int, bytes]) -> tuple[ErrorCode, list]:
    got, sent = _through(c, produce_req(parts))
    (index,) = parts
    return ErrorCode(by_partition(got)[index][0]), sent


def _corrupt(records: bytes) -> bytes:
    out = bytearray(records)
    out[-1] ^= 0x01  # a record byte: the CRC no longer matches, the header still reads as written
    return bytes(out)


def _two_clients():
    """The victim's and the attacker's connections to one proxy process: one producer id table, two sessions."""
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(VICTIM, 10)
    victim = ctx(producer_ids=ids, session=Session(clock=lambda: now[0]))
    attacker = replace(victim, session=Session(clock=lambda: now[0]))
    return victim, attacker, now


def test_another_client_s_corrupt_batch_does_not_hold_back_a_producer_s_first_batches():
    """The attacker sends a corrupt batch claiming the victim's id every 25 s on partition 0, where the victim wrote
    nothing yet: the victim's batches there were refused NOT_LEADER_OR_FOLLOWER for as long as it went on."""
    victim, attacker, now = _two_clients()
    for round_ in range(4):
        now[0] = round_ * (REFUSAL_MEMORY_S - 5)
        assert _code(attacker, {0: _corrupt(one_record(VICTIM, 0, 0))}) == (ErrorCode.corrupt_message, [])
        now[0] += 1
        code, sent = _code(victim, {0: one_record(VICTIM, 0, round_)})
        assert code == ErrorCode.none and sent, \
            f"the victim's batch {round_} answered {code.name} (sent to {sent}): held back by another client's batch"


def test_another_client_s_corrupt_batch_does_not_hold_back_a_producer_back_from_another_proxy():
    """The victim wrote batch 0 here, then 1..99 through another proxy; back here, its batch 100 goes on a fresh
    physical id. The attacker's corrupt batch claiming its id was remembered at the victim's end forwarded (1): batch
    100 was refused as a gap behind it, 30 s after each corrupt batch."""
    victim, attacker, now = _two_clients()
    assert _code(victim, {0: one_record(VICTIM, 0, 0)})[0] == ErrorCode.none
    for round_ in range(3):
        now[0] = 1 + round_ * (REFUSAL_MEMORY_S - 5)
        assert _code(attacker, {0: _corrupt(one_record(VICTIM, 0, 0))}) == (ErrorCode.corrupt_message, [])
        code, sent = _code(victim, {0: one_record(VICTIM, 0, 100 + round_)})
        assert code == ErrorCode.none and sent, \
            f"the victim's batch {100 + round_} answered {code.name}: held back by another client's batch"


def test_a_corrupt_batch_on_the_producer_s_own_connection_still_holds_back_the_batch_after_it():
    """What the corrupt-batch rule guards, kept: the client's batch 1 corrupt (its id not yet vouched on this
    connection, e.g. the id came from InitProducerId on another connection), its batch 0 never written before it:
    batch 2 on a fresh physical id would be written and librdkafka would ack 1 implicitly. The hold is the
    connection's own; another connection's batches of the same id are not held by it."""
    victim, other, now = _two_clients()
    assert _code(victim, {0: _corrupt(one_record(VICTIM, 0, 0))}) == (ErrorCode.corrupt_message, [])
    assert not victim.producer_ids._refused and other.session.producers is None  # the table untouched
    assert _code(victim, {0: one_record(VICTIM, 0, 1)}) == (ErrorCode.not_leader_or_follower, [])
    now[0] = REFUSAL_MEMORY_S + 1
    assert _code(victim, {0: one_record(VICTIM, 0, 0)})[0] == ErrorCode.none
    assert _code(victim, {0: one_record(VICTIM, 0, 1)})[0] == ErrorCode.none


def test_a_corrupt_batch_of_an_id_the_connection_vouches_for_is_remembered_at_its_end_forwarded():
    """The connection wrote batch 0 (its CRC held): its id is vouched there, and a corrupt batch 1 is remembered in
    the producer table at the end forwarded (1), so batch 2 is refused until 1 is written, even on a confirmed id."""
    victim, _, _ = _two_clients()
    assert _code(victim, {0: one_record(VICTIM, 0, 0)})[0] == ErrorCode.none
    assert _code(victim, {0: _corrupt(one_record(VICTIM, 0, 1))}) == (ErrorCode.corrupt_message, [])
    assert victim.producer_ids.refused_before((VICTIM, 0, "t", 0), 2) == 1
    assert _code(victim, {0: one_record(VICTIM, 0, 2)}) == (ErrorCode.not_leader_or_follower, [])
    assert _code(victim, {0: one_record(VICTIM, 0, 1)})[0] == ErrorCode.none
    assert _code(victim, {0: one_record(VICTIM, 0, 2)})[0] == ErrorCode.none


def _init(c, producer_id: int, epoch: int):
    return init_producer_id.handle(c, None, InitProducerIdRequest(
        transactional_id=None, transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=60)),
        producer_id=producer_id, producer_epoch=epoch))


def test_init_producer_id_naming_another_s_id_gets_a_new_id_as_from_kafka():
    """The attacker names the victim's (id, epoch 0) and got (id, 1); the victim's own KIP-360 bump after a timeout
    then got (id, 1) too: two producers on one (logical id, epoch), so one physical id and one sequence space per
    partition. The broker then answers one producer's batch 0 DUPLICATE_SEQUENCE_NUMBER after the other's (clients
    count it as written: acked, never written), or OUT_OF_ORDER_SEQUENCE_NUMBER. Kafka gives a new id, epoch 0."""
    victim, attacker, _ = _two_clients()
    given = _init(victim, -1, -1)
    assert (given.error_code, given.producer_id, given.producer_epoch) == (ErrorCode.none, VICTIM, 0)
    stolen = _init(attacker, VICTIM, 0)
    bumped = _init(victim, VICTIM, 0)
    assert stolen.error_code == bumped.error_code == ErrorCode.none
    assert (stolen.producer_id, stolen.producer_epoch) != (bumped.producer_id, bumped.producer_epoch), \
        f"two clients were given one producer identity {(bumped.producer_id, bumped.producer_epoch)}"
    assert stolen.producer_id != VICTIM and stolen.producer_epoch == 0
    assert bumped.producer_id != VICTIM and bumped.producer_epoch == 0
