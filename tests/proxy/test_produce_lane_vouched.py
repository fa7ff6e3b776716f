"""The Produce lane's vouch, done inline in `produce.lane_producer` with a fast path (one look-up once the connection
vouched for the pair): a connection vouches only for the producer id and epoch of the batches it sent intact, so a
corrupt batch under any other id or epoch is still held against that connection alone and leaves the producer's
table untouched (docs/DESIGN.md §5.4, "The batch's CRC"), while its own corrupt batch is remembered for the producer.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.proxy.plan import connection_producers
from fedkafka.security.session import Session
from proxy.test_produce_lane import PID, Broker, answers_of, ask, batch, frame, generic, proxy, run, seeded, view

KEY = (PID, 0, "t", 0)


def _corrupt(records: bytes) -> bytes:
    out = bytearray(records)
    out[-1] ^= 0x01  # a record byte: the CRC-32C no longer matches, the header still reads as written
    return bytes(out)


def test_the_lane_vouches_for_its_connection_s_own_id_and_epoch_only():
    """The writer vouched for another id first (InitProducerId gave it one); its steady batches go the lane (the
    first vouches for (PID, 0) too, the second finds it vouched); the other connection vouched for epoch 1 of the same
    id only: its corrupt batch claiming epoch 0 is held against it (its own batches there wait), nothing is remembered
    for the producer; the writer's own corrupt batch is."""
    async def scenario():
        broker = await Broker().start()
        table = seeded({0: "steady"}, {0: 5}, {})
        d = await proxy(view(), broker, producer_ids=table)
        writer, other = Session(), Session()
        table.vouch(connection_producers(writer), PID + 1, 0)
        table.vouch(connection_producers(other), PID, 1)
        try:
            for seq in (5, 6):
                assert answers_of(await ask(d, frame({0: batch(1, PID, 0, seq)}), writer))[0][0] == ErrorCode.none
            assert d.lane.taken == 2
            assert list(writer.producers.vouched) == [(PID + 1, 0), (PID, 0)]
            assert list(other.producers.vouched) == [(PID, 1)]

            corrupt = frame({0: _corrupt(batch(1, PID, 0, 7))})
            assert answers_of(await generic(d, corrupt, other))[0][0] == ErrorCode.corrupt_message
            assert KEY not in table._refused, "a corrupt batch of an id its connection did not vouch for reached it"
            assert table.held(other.producers, "t", 0) and not table.held(writer.producers, "t", 0)

            assert answers_of(await generic(d, corrupt, writer))[0][0] == ErrorCode.corrupt_message
            assert KEY in table._refused  # its own: remembered for the producer (its next batch is a gap)
        finally:
            broker.close()
    run(scenario)


def test_a_lane_request_without_a_session_vouches_for_nothing():
    """No session (an internal caller): the lane takes the steady batch and makes no connection's producers."""
    async def scenario():
        broker = await Broker().start()
        table = seeded({0: "steady"}, {0: 5}, {})
        d = await proxy(view(), broker, producer_ids=table)
        try:
            assert answers_of(await ask(d, frame({0: batch(1, PID, 0, 5)})))[0][0] == ErrorCode.none
            assert d.lane.taken == 1 and KEY not in table._refused
        finally:
            broker.close()
    run(scenario)
