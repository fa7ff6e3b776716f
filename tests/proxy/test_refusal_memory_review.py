"""DESIGN §5.3 rule 2 says a transactional batch is never remembered as refused ("Never remembered:
... TRANSACTIONAL_ID_AUTHORIZATION_FAILED for a transactional request or batch, which ... anyone may send under any
producer id"; the table: "transactional batches ... claiming a producer's id ... nothing remembered"). It is, when the
proxy refuses its partition for another reason first (a lapsed lease, a draining proxy, a frozen partition, a cluster
not writable): `_classify` took the batch's sequence key before it asked `_producer_refusal`, and noted the refusal
(these tests failed before the fix)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kio.schema.errors import ErrorCode

from proxy.test_handlers import batch as one_record
from proxy.test_handlers import ctx
from proxy.test_refusal_memory_pipeline import _code, _table, _transactional


def _frozen(c):
    t = c.view.topics["t"]
    chain = replace(t.partitions[0], frozen=True)
    return replace(c, view=replace(c.view, topics={"t": replace(t, partitions=(chain, *t.partitions[1:]))}))


@pytest.mark.parametrize("refusing", ["lease", "frozen"])
def test_a_transactional_batch_claiming_a_producer_s_id_is_not_remembered_when_its_partition_is_refused(refusing):
    c = ctx(producer_ids=_table())
    assert _code(c, {0: one_record(1000, 0, 0)})[0] == ErrorCode.none  # the victim, steady on p0
    refused = replace(c, lease_valid=False) if refusing == "lease" else _frozen(c)
    # another client's transactional batch claiming the victim's id at sequence 0 (already written), while p0 is
    # refused: remembered, the victim's next batch (1) is 'past' it, refused as a gap (NOT_LEADER_OR_FOLLOWER) for
    # 30 s after each such batch; the victim never resends 0 (acked), so it is held back as long as they come
    assert _code(refused, {0: _transactional(0)})[0] == ErrorCode.not_leader_or_follower
    assert _code(c, {0: one_record(1000, 0, 1)})[0] == ErrorCode.none, "the victim's next batch was refused"
    assert not c.producer_ids._refused
