"""Review of s36-produce (the plain Produce lane's per-request cut, issue #20), finding 1 (fixed on s36-fixproduce:
`UpstreamProduce.frame_parts` is main's again): a request the twin's writer declines was offered to it twice."""

from __future__ import annotations

import pytest

from fedkafka.protocol import records as rec
from fedkafka.proxy.handlers import produce as produce_handler


class _Revision4Twin:
    """The built twin as one of revision 4 (before `produce_request_parts` took a RecordParts, records.py's
    `_HEADS_REVISION`): its writer declines a request holding one (None), and counts its calls."""

    REVISION = 4

    def __init__(self, module) -> None:
        self._module, self.writes = module, 0

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def produce_request_parts(self, version, correlation_id, client_id, acks, timeout_ms, topics, by_reference):
        self.writes += 1
        if any(isinstance(p.records, rec.RecordParts) for t in topics for p in t.partition_data):
            return None
        return self._module.produce_request_parts(version, correlation_id, client_id, acks, timeout_ms, topics,
                                                  by_reference)


@pytest.mark.skipif(not rec.compiled_available(), reason="fedkafka_speedups is not built")
def test_a_request_the_twin_declines_is_offered_to_it_once(monkeypatch):
    before = rec.implementation()
    twin = _Revision4Twin(rec._load_compiled())
    head = bytearray(b"h" * 61)  # a rewritten batch head in a buffer of its own, the body the client's
    records = rec.RecordParts([head, memoryview(b"b" * 40)], 101)
    request = produce_handler.UpstreamProduce(9, 30_000, (rec.ProduceTopicData(
        "phys", (rec.ProducePartitionData(3, records),)),))
    with monkeypatch.context() as patch:
        patch.setattr(rec, "_load_compiled", lambda: twin)
        rec.use("compiled")
        try:
            written = b"".join(bytes(p) for p in request.frame_parts(7, "fedkafka"))
        finally:
            patch.undo()
            rec.use(before)
    rec.use("python")
    try:
        python = b"".join(bytes(p) for p in request.frame_parts(7, "fedkafka"))
    finally:
        rec.use(before)
    assert written == python  # the same bytes either way: only the work differs
    assert twin.writes == 1
