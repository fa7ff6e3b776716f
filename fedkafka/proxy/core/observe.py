"""The dispatcher's one observer hook: requests, errors and latency per API, record bytes per logical topic and
per physical cluster, refusals by reason (also logged: one line per request and reason).

Cheap per request: plain integers in dicts keyed once per (api, version), a bisect into the latency buckets, and
a walk over the answer's error codes along paths computed once per response type. No prometheus_client
objects (each of their updates takes a lock) on the request path: the counts become metric families when
scraped, in the same event loop, so a scrape always sees whole requests. `bench/metrics_cost.py` measures it.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
import typing
from collections.abc import Callable

from kio.schema.errors import ErrorCode
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fedkafka.protocol import codec
from fedkafka.proxy.plan import UNANSWERED, Refused, UpstreamError
from fedkafka.security.session import Session

log = logging.getLogger("fedkafka.refusals")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PRODUCE, FETCH = 0, 1
OTHER_TOPIC = "_other"  # a topic name not in the view: client-chosen, so never a label of its own
UNSUPPORTED = (-1, -1)  # the series key of every request version not served (labels api="other", version="other")


class NullObserver:
    """No metrics: the dispatcher's calls cost a method call each. Refusals are still logged."""

    def request(self, api_key: int, version: int, request, view) -> object:
        """A token the dispatcher hands back to `answered` (None here: nothing to measure)."""
        return None

    def answered(self, seen, reply) -> None:
        pass

    def unsupported(self, api_key: int, version: int) -> None:
        pass

    def upstream(self, calls, results) -> None:
        pass

    def refused(self, reason: str, topic: str, partition: int, detail: str | None, client_id: str | None) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        # client-chosen names quoted (repr): a newline in one does not start a line (the structured fields as they are)
        entry = topic if partition < 0 else f"{topic}/{partition}"  # as a request's line names it (`Refused.add`)
        log.info("refused %s %r client=%r: %s", reason, entry, client_id, detail,
                 extra={"refusal": {"reason": reason, "topic": topic, "partition": partition,
                                    "client_id": client_id, "detail": detail}})

    def refused_together(self, refused: Refused, client_id: str | None, session: Session | None) -> None:
        """A request's refusals of one reason (`Context.report_refusals`): one line, however many entries."""
        if not log.isEnabledFor(logging.INFO):
            return
        principal, host = (None, None) if session is None else (session.principal, session.host)
        more = refused.count - len(refused.examples)
        detail = "; ".join(refused.details)
        # the names (a group id, a topic, the client.id, the SASL user in the principal) are the client's: quoted
        # (repr) in the text, as the failed-login line quotes the user, so that a newline in one starts no line
        log.info("refused %s: %d (%s) principal=%r host=%s client=%r: %s%s", refused.reason, refused.count, detail,
                 principal, host, client_id, ", ".join(map(repr, refused.examples)),
                 f" and {more} more" if more > 0 else "",
                 extra={"refusal": {"reason": refused.reason, "count": refused.count, "examples": refused.examples,
                                    "detail": detail, "principal": principal, "host": host, "client_id": client_id}})


NULL_OBSERVER = NullObserver()


class _ApiSeries:
    """Counts of one (api, version)."""

    __slots__ = ("api", "buckets", "count", "errors", "requests", "seconds", "version")

    def __init__(self, api: str, version: int | str):
        self.api, self.version = api, str(version)
        self.requests = self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: above every bound (+Inf)
        self.errors: dict[int, int] = {}


class _Seen:
    __slots__ = ("series", "started", "view")

    def __init__(self, series: _ApiSeries, started: float, view):
        self.series, self.started, self.view = series, started, view


class RequestMetrics(NullObserver, Collector):
    def __init__(self, registry=None):
        self._series: dict[tuple[int, int], _ApiSeries] = {}
        self.topic_bytes: dict[tuple[str, str], int] = {}  # (logical topic, in|out)
        self.cluster_bytes: dict[tuple[str, str], int] = {}  # (physical cluster, in|out)
        self.upstream_errors: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        if registry is not None:
            registry.register(self)

    # -- per request -----------------------------------------------------------------------------
    def request(self, api_key: int, version: int, request, view) -> _Seen:
        series = self._series.get((api_key, version)) or self._new_series(api_key, version)
        series.requests += 1
        if api_key == PRODUCE:
            topics = view.topics
            for t in request.topic_data:
                n = 0
                for p in t.partition_data:
                    if p.records is not None:
                        n += len(p.records)
                _add(self.topic_bytes, (t.name if t.name in topics else OTHER_TOPIC, "in"), n)
        return _Seen(series, time.perf_counter(), view)

    def answered(self, seen: _Seen | None, reply) -> None:
        if seen is None:
            return
        elapsed = time.perf_counter() - seen.started
        series = seen.series
        series.count += 1
        series.seconds += elapsed
        series.buckets[bisect.bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        walker = _walkers.get(type(reply))
        if walker is None:
            walker = _walkers[type(reply)] = _walker_for(type(reply)) or _none
        walker(reply, series.errors)
        if getattr(reply, "__api_key__", None) == FETCH:
            topics = seen.view.topics
            for t in reply.responses:
                n = 0
                for p in t.partitions:
                    if p.records is not None:
                        n += len(p.records)
                _add(self.topic_bytes, (t.topic if t.topic in topics else OTHER_TOPIC, "out"), n)

    def unsupported(self, api_key: int, version: int) -> None:
        """A request version this proxy does not serve: every such (api_key, version) in one series, api and
        version "other" (a client picks any of 2^32 pairs; one series each would grow without end)."""
        series = self._series.get(UNSUPPORTED) or self._new_series(*UNSUPPORTED)
        series.requests += 1
        _add(series.errors, ErrorCode.unsupported_version, 1)

    def upstream(self, calls, results) -> None:
        for call, result in zip(calls, results, strict=True):
            cluster = call.target.cluster
            if isinstance(result, UpstreamError):
                _add(self.upstream_errors, cluster, 1)
                continue
            api = call.request.__api_key__
            if api == PRODUCE:
                n = 0
                for t in call.request.topic_data:
                    for p in t.partition_data:
                        if p.records is not None:
                            n += len(p.records)
                _add(self.cluster_bytes, (cluster, "out"), n)
            elif api == FETCH and result is not None and result is not UNANSWERED:
                n = 0
                for t in result.responses:
                    for p in t.partitions:
                        if p.records is not None:
                            n += len(p.records)
                _add(self.cluster_bytes, (cluster, "in"), n)

    def refused(self, reason: str, topic: str, partition: int, detail: str | None, client_id: str | None) -> None:
        _add(self.refusals, reason, 1)
        super().refused(reason, topic, partition, detail, client_id)

    def refused_together(self, refused: Refused, client_id: str | None, session: Session | None) -> None:
        _add(self.refusals, refused.reason, refused.count)
        super().refused_together(refused, client_id, session)

    def _new_series(self, api_key: int, version: int) -> _ApiSeries:
        if (api_key, version) == UNSUPPORTED:
            series = self._series[UNSUPPORTED] = _ApiSeries("other", "other")
        else:
            series = self._series[(api_key, version)] = _ApiSeries(_api_name(api_key), version)
        return series

    # -- scrape ----------------------------------------------------------------------------------
    def collect(self):
        requests = CounterMetricFamily("fedkafka_proxy_requests", "Client requests by API and version",
                                       labels=["api", "version"])
        errors = CounterMetricFamily("fedkafka_proxy_errors", "Error codes in answers to clients (one per partition "
                                     "or entity that carries one), by API", labels=["api", "error"])
        latency = HistogramMetricFamily("fedkafka_proxy_request_seconds", "Request read to answer ready, by API",
                                        labels=["api"])
        by_api: dict[str, list] = {}
        error_counts: dict[tuple[str, str], int] = {}
        for s in list(self._series.values()):
            requests.add_metric([s.api, s.version], s.requests)
            merged = by_api.setdefault(s.api, [[0] * len(s.buckets), 0.0])
            merged[0] = [a + b for a, b in zip(merged[0], s.buckets, strict=True)]
            merged[1] += s.seconds
            for code, n in list(s.errors.items()):
                _add(error_counts, (s.api, _error_name(code)), n)
        for (api, error), n in error_counts.items():
            errors.add_metric([api, error], n)
        for api, (buckets, seconds) in by_api.items():
            cumulative, total = [], 0
            for bound, n in zip((*[floatToGoString(b) for b in LATENCY_BUCKETS], "+Inf"), buckets, strict=True):
                total += n
                cumulative.append((bound, total))
            latency.add_metric([api], cumulative, seconds)
        yield requests
        yield errors
        yield latency
        yield _counter("fedkafka_proxy_topic_bytes", "Record bytes by logical topic: in = produced by clients, "
                       "out = fetched by clients", ["topic", "direction"], self.topic_bytes)
        yield _counter("fedkafka_proxy_cluster_bytes", "Record bytes by physical cluster: out = produced to it, "
                       "in = fetched from it", ["cluster", "direction"], self.cluster_bytes)
        yield _counter("fedkafka_proxy_upstream_errors", "Upstream calls without an answer (unreachable, lost "
                       "connection, timeout), by physical cluster", ["cluster"], self.upstream_errors)
        yield _counter("fedkafka_proxy_refusals", "Request parts the proxy refused by its own rules, by reason "
                       "(lease, frozen, gap, cluster, transactions, auth, ...)", ["reason"], self.refusals)


def _add(counts: dict, key, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


def _counter(name: str, doc: str, labels: list[str], counts: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in list(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


def _api_name(api_key: int) -> str:
    """"Produce", "Fetch", ... from any version kio knows of the key; its number when it knows none."""
    for version in codec.known_versions(api_key):
        return codec.request_schema(api_key, version).__name__.removesuffix("Request")
    return str(api_key)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


# -- error codes of any kio response, along paths computed once per type ----------------------------
_Walker = Callable[[object, dict], None]
_walkers: dict[type, _Walker] = {}


def _none(_reply, _counts) -> None:
    pass


def error_counts(reply) -> dict[int, int]:
    """Non-zero error codes anywhere in a kio entity, counted (tests and tools)."""
    counts: dict[int, int] = {}
    (_walker_for(type(reply)) or _none)(reply, counts)
    return counts


def _walker_for(t: object) -> _Walker | None:
    """A function adding every non-zero error_code in an entity of type t to a dict; None when it has none."""
    if callable(getattr(t, "count_errors", None)):  # an answer written without kio (handlers/produce.py)
        return lambda reply, counts: typing.cast(typing.Any, reply).count_errors(counts)
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

    def walk(entity, counts: dict) -> None:
        if direct:
            code = entity.error_code
            if code:
                counts[code] = counts.get(code, 0) + 1
        for name, many, sub in nested:
            value = getattr(entity, name)
            if value is None:
                continue
            if many:
                for item in value:
                    sub(item, counts)
            else:
                sub(value, counts)

    return walk
