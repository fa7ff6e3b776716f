"""Cost of reading a broker's ProduceResponse: kio (`codec.decode_response`, then the conversion of its entities
the produce handler did before: datetime and getattr) against records.py's `read_produce_response`.

The answer a broker gives most: one topic, 1 or 4 partitions, no error, no record errors, no tags. `timeit`, best
of 7 rounds; prints µs per answer.
"""

from __future__ import annotations

import datetime
import timeit

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)


def kio_then_converted(resp_t, frame: bytes) -> list:
    """What the handler got before: kio's entities, turned into ProducePartitionAnswer values."""
    _, body = codec.decode_response(resp_t, frame)
    out = []
    for t in body.responses:
        for p in t.partition_responses:
            appended = getattr(p, "log_append_time", None)
            out.append(rec.ProducePartitionAnswer(
                p.index, p.error_code, p.base_offset, -1 if appended is None else (appended - _EPOCH) // _MS,
                getattr(p, "log_start_offset", -1),
                tuple((e.batch_index, e.batch_index_error_message) for e in getattr(p, "record_errors", ())),
                getattr(p, "error_message", None)))
    return out


def best_us(fn, number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    print("| µs per answer | kio decode | kio + conversion | records.py |")
    print("| --- | --- | --- | --- |")
    for version in (7, 9):
        for partitions in (1, 4):
            answers = [rec.ProducePartitionAnswer(i, 0, 1_000_000 + i, -1, 0) for i in range(partitions)]
            frame = rec.produce_response_frame(version, 5, [("orders", answers)])[4:]
            resp_t = codec.response_schema(0, version)
            assert rec.read_produce_response(frame, version)[0][1] == tuple(kio_then_converted(resp_t, frame))
            kio = best_us(lambda f=frame, t=resp_t: codec.decode_response(t, f))
            converted = best_us(lambda f=frame, t=resp_t: kio_then_converted(t, f))
            ours = best_us(lambda f=frame, v=version: rec.read_produce_response(f, v))
            print(f"| v{version}, {partitions} partition{'s' if partitions > 1 else ''} | {kio:.1f} | "
                  f"{converted:.1f} | {ours:.1f} |")


if __name__ == "__main__":
    main()
