"""The Produce lane's compiled steps against the Python code they short-cut, in one process (issue #20).

The request step: `records.read_lane_request` (one call: the frame read, the request and batch checks, the route
looked up, the broker's request made) against what the Python lane does for the same request (`produce.read_request`,
`lane_takes`, the route cache's lookup, `lane_batch`, `lane_upstream`). The answer step: `LaneProduce.read_response`
with `records.lane_written` against without it. A plain producer's request of one partition (librdkafka's usual:
one 64 KiB batch), the twin of revision 7 on the path. Pairs of timings alternate; each figure is the median over
rounds of the best of a round's repeats, in microseconds a call, and the per-round ratios compiled / Python. With a
twin of revision 8, also the lane's lazy request step (`lazy=True`: a `LaneRequest`, its topics not made) against
the full one.

    PYTHONPATH=<dir of the twin>:$PWD .venv/bin/python bench/lane_step_cost.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from fedkafka.protocol import records as rec
from fedkafka.proxy.handlers import produce
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View


def plain_batch(records: int, size: int) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(records):
        b.append(i, timestamp=1_700_000_000_000 + i, key=None, value=b"v" * size, headers=[])
    return bytes(b.build())


def setup():
    chain = PartitionChain(segments=(Segment("c1", "phys", 0, 0, None, 0),), leader_epoch=3)
    view = View(version=1, clusters={"c1": Cluster("c1", "h1:1")},
                topics={"t": LogicalTopic("t", "0" * 31 + "1", (chain,))}, proxies=(), acls=(), draining=())
    records = plain_batch(60, 1024)
    frame = b"".join(bytes(p) for p in rec.produce_request_parts(9, 5, "rdkafka", -1, 30_000,
                                                                 (("t", ((0, records),)),)))[4:]
    route = produce.lane_route(view, True, "t", 0)
    assert route is not None
    table = rec.lane_routes()
    assert table is not None, "the twin of revision 7 is not on the path"
    table.insert("t", 0, route, route.seg.topic, route.seg.partition)
    cache = {("t", 0): route}
    answer = rec.ProducePartitionAnswer(0, 0, 100, -1, 0)
    answer_frame = rec.produce_response_frame(9, 77, (("phys", (answer,)),), 0)[4:]
    return frame, table, cache, answer_frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--number", type=int, default=20_000)
    args = ap.parse_args()
    frame, table, cache, answer_frame = setup()
    upstream = rec.read_lane_request(frame, 100_000, table, produce.LANE_UPSTREAM)[2]  # type: ignore[index]

    def request_compiled():
        return rec.read_lane_request(frame, 100_000, table, produce.LANE_UPSTREAM)

    def request_lazy():  # revision 8, the lane's: the request a LaneRequest, its topics not made
        return rec.read_lane_request(frame, 100_000, table, produce.LANE_UPSTREAM, True)

    def request_python():  # `ProduceLane._start_read` and `_routes_for` for this request, their Python calls
        request = produce.read_request(frame, max_elements=100_000)
        if not produce.lane_takes(request):
            raise AssertionError
        routes = []
        for t in request.topic_data:
            for pd in t.partition_data:
                routes.append(cache[(t.name, pd.index)])
                if produce.lane_batch(pd.records) is None:
                    raise AssertionError
        return produce.lane_upstream(request, routes)

    compiled_answer = rec.lane_written  # `use` binds it to the twin's function

    def answer(step):
        def read():
            rec.lane_written = step
            return upstream.read_response(answer_frame)
        return read

    pairs = {"request": (("compiled", request_compiled), ("python", request_python)),
             "answer": (("compiled", answer(compiled_answer)), ("python", answer(rec._no_lane_written)))}
    if rec._lazy_lane is not None:  # a twin of revision 8: the lazy request against the full one
        pairs["lazy"] = (("lazy", request_lazy), ("full", request_compiled))
    for name, ((new_label, new), (old_label, old)) in pairs.items():
        times: dict[str, list[float]] = {new_label: [], old_label: []}
        for _ in range(args.rounds):
            for label, f in ((new_label, new), (old_label, old)):
                times[label].append(min(timeit.repeat(f, number=args.number, repeat=3)) / args.number * 1e6)
        rec.lane_written = compiled_answer
        ratios = [c / p for c, p in zip(times[new_label], times[old_label], strict=True)]
        print(f"{name:8} {new_label} {statistics.median(times[new_label]):6.2f} us  {old_label} "
              f"{statistics.median(times[old_label]):6.2f} us  ratio per round "
              f"{', '.join(f'{r:.2f}' for r in ratios)}  median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
