"""The dispatcher's one observer hook: requests, errors and latency per API, record bytes per logical topic and
per physical cluster, refusals by reason (each also logged as one line).

Per request the cost is a clock read, a dict lookup for the (api, version) series (label children are looked
up once, not per request), a counter and a histogram update, and a walk over the answer's error codes along
paths computed once per response type. `bench/metrics_cost.py` measures it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Callable

from kio.schema.errors import ErrorCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from fedkafka.protocol import codec
from fedkafka.proxy.plan import UNANSWERED, UpstreamError

log = logging.getLogger("fedkafka.refusals")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PRODUCE, FETCH = 0, 1
OTHER_TOPIC = "_other"  # a topic name not in the view: client-chosen, so never a label of its own


class NullObserver:
    """No metrics: the dispatcher's calls cost a method call each."""

    def request(self, api_key: int, version: int, request, view) -> None:
        return None

    def answered(self, seen, reply) -> None:
        pass

    def unsupported(self, api_key: int, version: int) -> None:
        pass

    def upstream(self, calls, results) -> None:
        pass

    def refused(self, reason: str, topic: str, partition: int, detail: str | None, client_id: str | None) -> None:
        log.info("refused %s %s/%s client=%s: %s", reason, topic, partition, client_id, detail,
                 extra={"refusal": {"reason": reason, "topic": topic, "partition": partition,
                                    "client_id": client_id, "detail": detail}})


NULL_OBSERVER = NullObserver()


class _ApiSeries:
    """The label children of one (api, version), looked up once."""

    __slots__ = ("api", "errors", "latency", "requests")

    def __init__(self, obs: RequestMetrics, api: str, version: int):
        self.api = api
        self.requests = obs.requests.labels(api, str(version))
        self.latency = obs.latency.labels(api)
        self.errors: dict[int, Counter] = {}


class _Seen:
    __slots__ = ("series", "started", "view")

    def __init__(self, series: _ApiSeries, started: float, view):
        self.series, self.started, self.view = series, started, view


class RequestMetrics(NullObserver):
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.requests = Counter("fedkafka_proxy_requests", "Client requests by API and version",
                                ["api", "version"], registry=r)
        self.error_count = Counter("fedkafka_proxy_errors", "Error codes in answers to clients (one per partition "
                                   "or entity that carries one), by API", ["api", "error"], registry=r)
        self.latency = Histogram("fedkafka_proxy_request_seconds", "Request read to answer ready, by API",
                                 ["api"], buckets=LATENCY_BUCKETS, registry=r)
        self.topic_bytes = Counter("fedkafka_proxy_topic_bytes", "Record bytes by logical topic: in = produced by "
                                   "clients, out = fetched by clients", ["topic", "direction"], registry=r)
        self.cluster_bytes = Counter("fedkafka_proxy_cluster_bytes", "Record bytes by physical cluster: out = "
                                     "produced to it, in = fetched from it", ["cluster", "direction"], registry=r)
        self.upstream_errors = Counter("fedkafka_proxy_upstream_errors", "Upstream calls without an answer "
                                       "(unreachable, lost connection, timeout), by physical cluster", ["cluster"],
                                       registry=r)
        self.refusals = Counter("fedkafka_proxy_refusals", "Request parts the proxy refused by its own rules, by "
                                "reason (lease, frozen, gap, cluster, transactions, auth, ...)", ["reason"],
                                registry=r)
        self._series: dict[tuple[int, int], _ApiSeries] = {}
        self._children: dict[tuple, Counter] = {}

    # -- per request -----------------------------------------------------------------------------
    def request(self, api_key: int, version: int, request, view) -> _Seen:
        series = self._series.get((api_key, version)) or self._new_series(api_key, version)
        series.requests.inc()
        if api_key == PRODUCE:
            self._topic_bytes(view, request.topic_data, "name", "partition_data", "in")
        return _Seen(series, time.perf_counter(), view)

    def answered(self, seen: _Seen | None, reply) -> None:
        if seen is None:
            return
        series = seen.series
        series.latency.observe(time.perf_counter() - seen.started)
        for code in _error_codes(reply):
            if code:
                (series.errors.get(code) or self._error_child(series, code)).inc()
        if getattr(reply, "__api_key__", None) == FETCH:
            self._topic_bytes(seen.view, reply.responses, "topic", "partitions", "out")

    def unsupported(self, api_key: int, version: int) -> None:
        series = self._series.get((api_key, version)) or self._new_series(api_key, version)
        series.requests.inc()
        (series.errors.get(ErrorCode.unsupported_version) or self._error_child(series, ErrorCode.unsupported_version)
         ).inc()

    def upstream(self, calls, results) -> None:
        for call, result in zip(calls, results, strict=True):
            cluster = call.target.cluster
            if isinstance(result, UpstreamError):
                self._child(self.upstream_errors, cluster).inc()
                continue
            api = call.request.__api_key__
            if api == PRODUCE:
                n = sum(len(p.records or b"") for t in call.request.topic_data for p in t.partition_data)
                self._child(self.cluster_bytes, cluster, "out").inc(n)
            elif api == FETCH and result is not None and result is not UNANSWERED:
                n = sum(len(p.records or b"") for t in result.responses for p in t.partitions)
                self._child(self.cluster_bytes, cluster, "in").inc(n)

    def refused(self, reason: str, topic: str, partition: int, detail: str | None, client_id: str | None) -> None:
        self._child(self.refusals, reason).inc()
        super().refused(reason, topic, partition, detail, client_id)

    # -- helpers ---------------------------------------------------------------------------------
    def _new_series(self, api_key: int, version: int) -> _ApiSeries:
        series = self._series[(api_key, version)] = _ApiSeries(self, _api_name(api_key), version)
        return series

    def _error_child(self, series: _ApiSeries, code: int) -> Counter:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        child = series.errors[code] = self.error_count.labels(series.api, name)
        return child

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _topic_bytes(self, view, topics, name_field: str, parts_field: str, direction: str) -> None:
        for t in topics:
            name = getattr(t, name_field)
            n = sum(len(p.records or b"") for p in getattr(t, parts_field))
            self._child(self.topic_bytes, name if name in view.topics else OTHER_TOPIC, direction).inc(n)


def _api_name(api_key: int) -> str:
    """"Produce", "Fetch", ... from any version kio knows of the key; its number when it knows none."""
    for version in range(32):
        if codec.response_type(api_key, version) is not None:
            return codec.request_type(api_key, version).__name__.removesuffix("Request")
    return str(api_key)


# -- error codes of any kio response, along paths computed once per type ----------------------------
_Walker = Callable[[object], typing.Iterator[int]]
_walkers: dict[type, _Walker] = {}


def _error_codes(reply) -> typing.Iterable[int]:
    t = type(reply)
    walker = _walkers.get(t)
    if walker is None:
        walker = _walkers[t] = _walker_for(t) or _none
    return walker(reply)


def _none(_reply) -> tuple:
    return ()


def _walker_for(t: type) -> _Walker | None:
    """A function yielding every error_code in an entity of type t, or None when it has none."""
    if not dataclasses.is_dataclass(t):
        return None
    direct = False
    nested: list[tuple[str, bool, _Walker]] = []
    for f in dataclasses.fields(t):
        if f.name == "error_code":
            direct = True
        elif "kafka_type" not in f.metadata:  # an entity or an array of entities
            many = typing.get_origin(f.type) is tuple
            inner = typing.get_args(f.type)[0] if many else f.type
            inner = next((a for a in typing.get_args(inner) if a is not type(None)), inner)  # Optional[Entity]
            sub = _walker_for(inner)
            if sub is not None:
                nested.append((f.name, many, sub))
    if not direct and not nested:
        return None

    def walk(entity) -> typing.Iterator[int]:
        if direct:
            yield entity.error_code
        for name, many, sub in nested:
            value = getattr(entity, name)
            if value is None:
                continue
            for item in value if many else (value,):
                yield from sub(item)

    return walk
