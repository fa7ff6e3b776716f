"""Load generator + verifier: the tool that proves "nothing acked is lost, keys stay in order".

N producers (confluent-kafka; idempotent or not) write keyed records carrying (key, per-key sequence)
at a steady rate; M consumers in one group read them back. Each key has exactly one writer, so its
acked order is well defined. The report counts:

- lost: acked but never consumed;
- duplicates: one (key, seq) stored at two different (partition, offset) places (a consumer
  re-reading the same offset after a rebalance is not a duplicate);
- order violations: per key, a record stored after one with a higher sequence;
- the produce error/latency timeline per second, to line up with workflow steps (`mark()`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

# a reread pass that reached the end of every partition ends after this long with nothing new (then starts over)
REREAD_QUIET_S = 2.0


@dataclass
class CheckerConfig:
    bootstrap: str
    topic: str
    producers: int = 2
    consumers: int = 2
    rate: float = 200.0  # records per second per producer
    # enough keys that every partition gets some: with 40 keys a given one of 8 partitions gets none in about
    # 1 run of 200 (one of 12 in 1 of 30), and "every moved partition takes writes" cannot be shown
    keys_per_producer: int = 100
    idempotent: tuple[bool, ...] = (True, False)  # cycled over producers
    # acks of the non-idempotent producers, cycled over them in order ("all" or "1"); an idempotent producer
    # always uses acks=all (librdkafka refuses anything else). acks=0 is left out: nothing is acked to count.
    acks: tuple[str, ...] = ("all",)
    value_size: int = 100
    group: str | None = None
    client_id: str = "fedkafka-checker"
    extra_producer_config: dict[str, Any] = field(default_factory=dict)
    extra_consumer_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Ack:
    partition: int
    offset: int
    latency: float
    at: float


class Checker:
    def __init__(self, config: CheckerConfig) -> None:
        self.cfg = config
        self.run_id = uuid.uuid4().hex[:8]
        self.group = config.group or f"checker-{self.run_id}"
        self._stop_producing = threading.Event()
        self._stop_consuming = threading.Event()
        self._lock = threading.Lock()
        self.acked: dict[tuple[str, int], _Ack] = {}
        self.ack_order: dict[str, list[int]] = defaultdict(list)
        self.idempotent_keys: set[str] = set()
        self.errors: list[tuple[float, str, str]] = []  # (time, key, error name)
        self.consumed: dict[tuple[str, int], set[tuple[int, int]]] = defaultdict(set)
        self.marks: list[tuple[float, str]] = []
        self.failures: list[str] = []  # clients that died
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self.reread_passes = 0  # passes of the reread (stop(reread=True)); more than one: a gap was passed early

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Checker:
        self._started = time.monotonic()
        for i in range(self.cfg.consumers):
            self._spawn(self._consume, f"consumer-{i}")
        for i in range(self.cfg.producers):
            self._spawn(self._produce, f"producer-{i}", i)
        return self

    def mark(self, label: str) -> None:
        """Note a workflow step on the timeline (e.g. 'scale-up started')."""
        self.marks.append((time.monotonic() - self._started, label))

    def stop(self, drain_timeout: float = 60.0, reread: bool = False) -> dict[str, Any]:
        """Stop producing, wait until every acked record is consumed (or timeout), return the report.

        `reread`: first read every partition from the beginning with a reader of its own (no group) and count
        what it sees too. After a failover the group's consumers may have skipped an unclean gap while its
        cluster was dead; the records acked there before it died are read inside the gap once it is back
        (docs/DESIGN.md §9), by any reader that starts before the gap."""
        self._stop_producing.set()
        for t in self._threads:
            if t.name.startswith("producer"):
                t.join()
        deadline = time.monotonic() + drain_timeout
        if reread:
            self._reread(deadline)
        while time.monotonic() < deadline and self._missing():
            time.sleep(0.25)
        self._stop_consuming.set()
        for t in self._threads:
            t.join()
        return self.report()

    def _spawn(self, target, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    # -- producing ----------------------------------------------------------------------------
    def _produce(self, index: int) -> None:
        """One producer; a client that dies (e.g. librdkafka's fatal idempotence errors) is a failure of the
        run, recorded for the report, not a silent stop."""
        try:
            self._produce_until_stopped(index)
        except Exception as e:  # KafkaException(FATAL) from poll/produce
            with self._lock:
                self.failures.append(f"producer-{index}: {e}")

    def producer_config(self, index: int) -> dict[str, Any]:
        """librdkafka settings of producer `index`: idempotence and acks as the config cycles them."""
        idempotent = self.cfg.idempotent[index % len(self.cfg.idempotent)]
        conf = {"bootstrap.servers": self.cfg.bootstrap, "client.id": f"{self.cfg.client_id}-p{index}",
                "enable.idempotence": idempotent, "linger.ms": 5, "acks": "all",
                "message.timeout.ms": 120_000, "retry.backoff.ms": 100}
        if not idempotent:
            plain_index = sum(1 for i in range(index) if not self.cfg.idempotent[i % len(self.cfg.idempotent)])
            conf["acks"] = self.cfg.acks[plain_index % len(self.cfg.acks)]
            # per-key order without idempotence as far as librdkafka keeps it: a batch that fails retriably can land
            # behind the next one, already built (its `message.send.max.retries` note), so tests assert order for
            # idempotent producers (`order_violations_idempotent`) and report the others'
            conf["max.in.flight.requests.per.connection"] = 1
        conf.update(self.cfg.extra_producer_config)
        return conf

    def _produce_until_stopped(self, index: int) -> None:
        conf = self.producer_config(index)
        idempotent = conf["enable.idempotence"]
        producer = Producer(conf)
        keys = [f"{self.run_id}-p{index}-k{j}" for j in range(self.cfg.keys_per_producer)]
        if idempotent:
            self.idempotent_keys.update(keys)
        seqs = dict.fromkeys(keys, 0)
        pad = "x" * max(0, self.cfg.value_size - 40)
        interval = 1.0 / self.cfg.rate if self.cfg.rate > 0 else 0.0
        next_at = time.monotonic()
        n = 0
        while not self._stop_producing.is_set():
            key = keys[n % len(keys)]
            seq = seqs[key]
            seqs[key] += 1
            n += 1
            sent = time.monotonic()
            value = json.dumps({"k": key, "s": seq, "pad": pad}).encode()
            while True:
                try:
                    producer.produce(self.cfg.topic, key=key.encode(), value=value,
                                     on_delivery=self._on_delivery(key, seq, sent))
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                producer.poll(delay)
        producer.flush(150)

    def _on_delivery(self, key: str, seq: int, sent: float):
        def callback(err, msg) -> None:
            now = time.monotonic()
            with self._lock:
                if err is not None:
                    self.errors.append((now - self._started, key, err.name()))
                else:
                    self.acked[(key, seq)] = _Ack(msg.partition(), msg.offset(), now - sent, now - self._started)
                    self.ack_order[key].append(seq)
        return callback

    # -- consuming ----------------------------------------------------------------------------
    def _consume(self) -> None:
        conf = {"bootstrap.servers": self.cfg.bootstrap, "group.id": self.group, "client.id": self.cfg.client_id,
                "auto.offset.reset": "earliest", "enable.auto.commit": True, "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1000}
        conf.update(self.cfg.extra_consumer_config)
        consumer = Consumer(conf)
        consumer.subscribe([self.cfg.topic])
        try:
            while not self._stop_consuming.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        with self._lock:
                            self.errors.append((time.monotonic() - self._started, "<consumer>", error.name()))
                    continue
                self._record(msg)
        finally:
            consumer.close()

    def _reread(self, deadline: float) -> None:
        """Read every partition from the beginning, pass after pass, until nothing acked is missing (or the
        deadline). A pass ends once every partition reached its end and stayed quiet: a reader can be moved past
        an unclean gap before its cluster's tail is readable through the proxy it asks (the proxy has not seen
        the cluster back yet, docs/DESIGN.md §9.3); the records stay at their offsets, and the next pass reads them."""
        conf = {"bootstrap.servers": self.cfg.bootstrap, "group.id": f"{self.group}-reread",
                "client.id": self.cfg.client_id, "enable.auto.commit": False}
        conf.update(self.cfg.extra_consumer_config)
        conf["enable.partition.eof"] = True  # a pass needs to know it reached the end
        reader = Consumer(conf)
        try:
            partitions = reader.list_topics(self.cfg.topic, timeout=30).topics[self.cfg.topic].partitions
            while time.monotonic() < deadline and self._missing():
                self._reread_pass(reader, list(partitions), deadline)
        finally:
            reader.close()

    def _reread_pass(self, reader, partitions: list[int], deadline: float) -> None:
        reader.assign([TopicPartition(self.cfg.topic, p, OFFSET_BEGINNING) for p in partitions])
        self.reread_passes += 1
        at_end: set[int] = set()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and self._missing():
            msg = reader.poll(0.2)
            if msg is None:
                if len(at_end) == len(partitions) and time.monotonic() - quiet_since >= REREAD_QUIET_S:
                    return
                continue
            quiet_since = time.monotonic()
            if msg.error() is None:
                at_end.discard(msg.partition())
                self._record(msg)
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())

    def _record(self, msg) -> None:
        try:
            body = json.loads(msg.value() or b"")
        except (ValueError, TypeError):
            return
        partition, offset = msg.partition(), msg.offset()  # set on every consumed record
        if not str(body.get("k", "")).startswith(self.run_id) or partition is None or offset is None:
            return
        with self._lock:
            self.consumed[(body["k"], body["s"])].add((partition, offset))

    # -- verdict ------------------------------------------------------------------------------
    def _missing(self) -> int:
        with self._lock:
            return sum(1 for k in self.acked if k not in self.consumed)

    def report(self) -> dict[str, Any]:
        with self._lock:
            acked = dict(self.acked)
            consumed = {k: set(v) for k, v in self.consumed.items()}
            errors = list(self.errors)
        lost = sorted(k for k in acked if k not in consumed)
        duplicates = {k: sorted(v) for k, v in consumed.items() if len(v) > 1}
        dup_idempotent = sum(1 for (key, _s) in duplicates if key in self.idempotent_keys)
        order = _order_violations(acked, consumed, self.idempotent_keys)
        return {
            "run_id": self.run_id,
            "topic": self.cfg.topic,
            "acked": len(acked),
            "consumed": sum(1 for k in acked if k in consumed),
            "lost": len(lost),
            "lost_sample": [f"{k}#{s}" for k, s in lost[:10]],
            # where each was acked (logical partition, offset; None: acked without one, i.e. librdkafka's
            # implicit ack after a later batch's success, or a DUPLICATE_SEQUENCE_NUMBER answer)
            "lost_acks": [f"{k}#{s} p{acked[(k, s)].partition}@{acked[(k, s)].offset}" for k, s in lost[:10]],
            # which producer wrote what: "p<index>" -> its acks and idempotence, and what it lost
            "producers": self._producer_summary(lost, order.by_producer),
            "duplicates": len(duplicates),
            "duplicates_idempotent": dup_idempotent,
            "order_violations": order.count,
            # of those, the idempotent producers' (a plain producer's may cross proxies: docs/DESIGN.md §4.2)
            "order_violations_idempotent": order.idempotent,
            "order_violations_unacked": order.unacked,
            "order_sample": order.sample,
            "produce_errors": len([e for e in errors if e[1] != "<consumer>"]),
            "client_failures": list(self.failures),
            "error_kinds": sorted({e[2] for e in errors}),
            "timeline": self._timeline(acked, errors),
            "marks": [{"t": round(t, 2), "label": label} for t, label in self.marks],
            "reread_passes": self.reread_passes,
        }

    def _producer_summary(self, lost: list[tuple[str, int]],
                          violations_by: dict[str, int]) -> dict[str, dict[str, Any]]:
        lost_by: dict[str, int] = defaultdict(int)
        for key, _seq in lost:
            lost_by[_producer_of(key)] += 1
        summary = {}
        for index in range(self.cfg.producers):
            conf = self.producer_config(index)
            summary[f"p{index}"] = {"idempotent": conf["enable.idempotence"], "acks": conf["acks"],
                                    "lost": lost_by.get(f"p{index}", 0),
                                    "order_violations": violations_by.get(f"p{index}", 0)}
        return summary

    @staticmethod
    def _timeline(acked: dict[tuple[str, int], _Ack], errors: list[tuple[float, str, str]]) -> list[dict]:
        buckets: dict[int, list[float]] = defaultdict(list)
        errs: dict[int, int] = defaultdict(int)
        for ack in acked.values():
            buckets[int(ack.at)].append(ack.latency)
        for at, key, _name in errors:
            if key != "<consumer>":
                errs[int(at)] += 1
        rows = []
        for second in sorted(set(buckets) | set(errs)):
            lat = sorted(buckets.get(second, []))
            rows.append({"second": second, "acked": len(lat), "errors": errs.get(second, 0),
                         "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
                         "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None})
        return rows


@dataclass
class _Order:
    """Per-key order violations (`_order_violations`)."""

    count: int = 0
    # of those, the ones where a record the producer was told failed (e.g. _MSG_TIMED_OUT: its outcome is
    # unknown, and it may still be written) is one of the two out of order
    unacked: int = 0
    idempotent: int = 0  # of keys of idempotent producers
    by_producer: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "p<index>" -> count
    sample: list[str] = field(default_factory=list)  # key#seq p<partition>@<offset> after #<higher seq>


def _order_violations(acked: dict, consumed: dict[tuple[str, int], set[tuple[int, int]]],
                      idempotent_keys: set[str]) -> _Order:
    """Per key, a record stored once after one with a higher sequence (a record stored twice is a duplicate: a
    retry, not a reorder), and a key split over partitions."""
    order = _Order()
    stored: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for (key, seq), places in consumed.items():
        for partition, offset in places:
            stored[key].append((partition, offset, seq))
    for key, rows in stored.items():
        found = int(len({p for p, _o, _s in rows}) > 1)  # a key split over partitions breaks per-key order
        highest = -1
        for partition, offset, seq in sorted(rows):
            if seq < highest and len(consumed[(key, seq)]) == 1:
                found += 1
                order.unacked += (key, seq) not in acked or (key, highest) not in acked
                if len(order.sample) < 10:
                    order.sample.append(f"{key}#{seq} p{partition}@{offset} after #{highest}")
            highest = max(highest, seq)
        if found:
            order.count += found
            order.by_producer[_producer_of(key)] += found
            order.idempotent += found if key in idempotent_keys else 0
    return order


def _producer_of(key: str) -> str:
    """The producer of a key, "p<index>" (keys are <run>-p<index>-k<n>); "?" for a key of another shape."""
    parts = key.split("-")
    return parts[1] if len(parts) == 3 else "?"


def run_check(config: CheckerConfig, duration: float, drain_timeout: float = 60.0) -> dict[str, Any]:
    checker = Checker(config).start()
    time.sleep(duration)
    return checker.stop(drain_timeout)
