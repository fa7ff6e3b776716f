"""Cost of the four Produce frame walks the proxy runs per request, as it calls them: the client's request read
(`read_produce_request`), the upstream request written (`produce_request_parts`), the broker's answer read
(`read_produce_response`) and the client's answer written (`produce_response_frame`). One topic, 1 x 64 KiB or
4 x 16 KiB of records (a producer's batch.size); `timeit`, best of 7; prints µs per call and what all four cost
per GB produced in such requests.
"""

from __future__ import annotations

import timeit

from fedkafka.protocol import records as rec


def best_us(fn, number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def walks_us(version: int, partitions: int, size: int) -> list[float]:
    """µs per call of the four walks for one request of `partitions` x `size` bytes of records."""
    topics = [("orders", [(i, bytes(size)) for i in range(partitions)])]
    frame = b"".join(bytes(p) for p in rec.produce_request_parts(version, 7, "rdkafka", -1, 30000, topics))[4:]
    request = rec.read_produce_request(frame)
    answers = [rec.ProducePartitionAnswer(i, 0, 1_000_000 + i, -1, 0) for i in range(partitions)]
    response = rec.produce_response_frame(version, 5, [("orders", answers)])[4:]
    return [
        best_us(lambda: rec.read_produce_request(frame)),
        best_us(lambda: rec.produce_request_parts(  # as UpstreamProduce.frame_parts calls it
            version, 9, "proxy", -1, 30000,
            [(t.name, [(p.index, p.records) for p in t.partition_data]) for t in request.topic_data])),
        best_us(lambda: rec.read_produce_response(response, version)),
        best_us(lambda: rec.produce_response_frame(version, 7, [("orders", answers)])),
    ]


def main() -> None:
    print(f"records.py: {rec.implementation()}")
    print("| µs per call | read_produce_request | produce_request_parts | read_produce_response "
          "| produce_response_frame | all four, CPU-s/GB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for version in (7, 9):
        for partitions, size in ((1, 65536), (4, 16384)):
            us = walks_us(version, partitions, size)
            per_gb = sum(us) * (1 << 30) / (partitions * size) / 1e6
            print(f"| v{version}, {partitions} x {size >> 10} KiB | " + " | ".join(f"{u:.1f}" for u in us)
                  + f" | {per_gb:.2f} |")


if __name__ == "__main__":
    main()
