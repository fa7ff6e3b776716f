"""A fuzz run: environment up, the good client on, fuzz connections + HTTP fuzz + probes + a process watch,
then the report. `replay` sends a saved corpus file's sends one by one and names the one that kills."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.types import TopicName

from fedkafka.fuzz.driver import Budget, KafkaWorker, Record, Recorder, Stats, probe_kafka
from fedkafka.fuzz.environment import Death, Environment
from fedkafka.fuzz.frames import Values
from fedkafka.fuzz.generator import Generator
from fedkafka.fuzz.goodclient import GoodClient
from fedkafka.fuzz.httpfuzz import HttpGenerator, HttpStats, HttpWorker
from fedkafka.protocol import codec

# Which recorded targets may have killed a service: the name service relays to both proxies.
RELATED = {"pproxy": ["pproxy", "nameservice>pproxy"], "cproxy": ["cproxy", "nameservice>cproxy"],
           "nameservice": ["nameservice>pproxy", "nameservice>cproxy", "nameservice-http"],
           "controller": ["controller"]}


class Probes(TypedDict):
    """Health probes of every endpoint, once a second."""

    sent: int
    failed: int
    failures: list[str]  # the first 30, "<seconds>s <endpoint>: <what failed>"


@dataclass
class Options:
    seed: int = 1
    frames: int | None = None  # None: until `duration`
    duration: float = 60.0
    connections: int = 8
    http_rate: float = 10.0
    good_rate: float = 50.0
    answer_timeout: float = 5.0
    workdir: Path = Path("fuzz-run")
    corpus: Path | None = None  # default: workdir/corpus
    clusters: dict[str, str] = field(default_factory=dict)  # empty: start two local clusters
    tag: str = "fuzz"
    restart: bool = True


# Kafka admin writes change the federation through the controller (CreateTopics of thousands of partitions,
# DeleteTopics of the run's topics): they are tested with their bad input in tests/proxy/test_admin_*.py, and
# fuzzing them would spend the run on topic creation instead of on the proxies' decoders and handlers.
ADMIN_WRITES = frozenset({19, 20, 21, 33, 37, 44})


class Run:
    def __init__(self, options: Options, env: Environment):
        self.o, self.env = options, env
        self.stats, self.http_stats = Stats(), HttpStats()
        self.recorder = Recorder()
        self.probes: Probes = {"sent": 0, "failed": 0, "failures": []}
        self.crashes: list[dict] = []
        self.outages: list[list[float]] = []  # [from, to] monotonic: a process dead or restarting
        self.corpus = options.corpus or options.workdir / "corpus"
        self.running = True

    # -- setup ----------------------------------------------------------------------------------------------
    def kafka_targets(self) -> list[tuple[str, tuple[str, int], dict, list[str]]]:
        """(recorder target, address, api table, client ids) per fuzz connection slot."""
        tables = {role: {k: v for k, v in api_versions(self.env.address(role)).items() if k not in ADMIN_WRITES}
                  for role in ("pproxy", "cproxy")}
        ns = self.env.address("nameservice")
        return [("pproxy", self.env.address("pproxy"), tables["pproxy"], ["fuzz-p-1"]),
                ("cproxy", self.env.address("cproxy"), tables["cproxy"], ["fuzz-c-1"]),
                ("nameservice>pproxy", ns, tables["pproxy"], ["fuzz-p-ns"]),
                ("nameservice>cproxy", ns, tables["cproxy"], ["fuzz-c-ns"])]

    async def main(self) -> dict:
        targets = self.kafka_targets()
        # one group per 4 connections (at least 3): JoinGroups that pile onto one group wait out each other's
        # rebalances (a member that never rejoins holds a group for its session timeout)
        groups = [f"{self.o.tag}-g{i}" for i in range(max(3, self.o.connections // 4))]
        deadline = time.monotonic() + self.o.duration
        budget = Budget(self.o.frames, deadline)
        workers = []
        for i in range(self.o.connections):
            name, address, table, client_ids = targets[i % len(targets)]
            values = Values(dict(self.env.fuzz_topics), groups, client_ids, idle=frozenset({self.env.idle_topic}))
            workers.append(KafkaWorker(name, address, Generator(self.o.seed, i, table, values), self.recorder,
                                       self.stats, self.o.answer_timeout))
        http = HttpWorker({"controller": self.env.address("controller"),
                           "nameservice-http": ("127.0.0.1", self.env.ns_http_port)},
                          HttpGenerator(self.o.seed, 0, self.env.token), self.http_stats, self.recorder,
                          self.o.http_rate)
        started = time.monotonic()
        side = [asyncio.create_task(self._watch()), asyncio.create_task(self._probe()),
                asyncio.create_task(http.run(lambda: self.running))]
        await asyncio.gather(*(w.run(budget) for w in workers))
        elapsed = time.monotonic() - started
        self.running = False
        await asyncio.sleep(1.0)  # one more watch round: a death caused by the last frames
        for task in side:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._check_deaths()
        self._save_hangs()
        return {"elapsed": elapsed}

    def _save_hangs(self) -> None:
        """Requests left unanswered past the answer timeout, and well-formed ones answered by a close: one file
        each (replayable like a crash file)."""
        for kind, recs in (("hangs", self.stats.hangs), ("dropped", self.dropped()[:30])):
            if recs:
                self.corpus.mkdir(parents=True, exist_ok=True)
                path = self.corpus / f"{kind}-seed{self.o.seed}.json"
                path.write_text(json.dumps({"service": "", "seed": self.o.seed, "sends": [r.to_dict() for r in recs]},
                                           indent=1))

    # -- watch and probes ------------------------------------------------------------------------------------
    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for death in self._check_deaths():
                outage = [death.noticed_at - 1.5, float("inf")]
                self.outages.append(outage)
                if self.o.restart:
                    try:
                        await loop.run_in_executor(None, self.env.restart, death.service)
                    except RuntimeError as exc:
                        self.crashes[-1]["restart_failed"] = str(exc)[-500:]
                    outage[1] = time.monotonic() + 1.0
            await asyncio.sleep(0.25)

    def _check_deaths(self) -> list[Death]:
        deaths = self.env.check()
        for death in deaths:
            self.crashes.append(self._save_crash(death))
        return deaths

    def _save_crash(self, death: Death) -> dict:
        suspects = self.recorder.suspects(RELATED.get(death.service, [death.service]), death.noticed_at)
        self.corpus.mkdir(parents=True, exist_ok=True)
        path = self.corpus / f"crash-{death.service}-{len(self.crashes) + 1}-seed{self.o.seed}.json"
        doc = {"service": death.service, "how": death.how, "at_seconds": death.at, "seed": self.o.seed,
               "frames_sent_before": self.stats.frames, "log_tail": death.log_tail,
               "sends": [r.to_dict() for r in suspects]}
        path.write_text(json.dumps(doc, indent=1))
        return {"service": death.service, "how": death.how, "cause": death.cause, "at_seconds": death.at,
                "frames_sent_before": self.stats.frames, "corpus_file": str(path),
                "suspects": [f"{r.target} {r.api} {r.mode} ({r.outcome}): {r.desc}"[:300] for r in suspects
                             if r.is_suspect],
                "log_tail": death.log_tail.splitlines()[-3:]}

    def dropped(self) -> list[Record]:
        """Well-formed requests answered by a close while every process was up."""
        return [r for r in self.stats.dropped
                if not any(start <= (r.done_at or 0.0) <= end for start, end in self.outages)]

    async def _probe(self) -> None:
        """Every second: ApiVersions + Metadata on a fresh connection to each Kafka endpoint, /healthz on HTTP."""
        frames = {"p": [codec.encode_request(ApiVersionsRequest(client_software_name="probe",
                                                                 client_software_version="1"), 1, "probe-p"),
                        _metadata_probe(self.env.good_topic, "probe-p")]}
        frames["c"] = [f.replace(b"probe-p", b"probe-c") for f in frames["p"]]
        kafka = {"pproxy": (self.env.address("pproxy"), "p"), "cproxy": (self.env.address("cproxy"), "c"),
                 "nameservice>pproxy": (self.env.address("nameservice"), "p"),
                 "nameservice>cproxy": (self.env.address("nameservice"), "c")}
        http = {"controller": self.env.address("controller"), "nameservice-http": ("127.0.0.1", self.env.ns_http_port)}
        while True:
            started = time.monotonic()
            checks = [probe_kafka(addr, frames[pool]) for addr, pool in kafka.values()]
            checks += [_probe_http(addr) for addr in http.values()]
            results = await asyncio.gather(*checks)
            for name, result in zip([*kafka, *http], results, strict=True):
                self.probes["sent"] += 1
                if result is not None:
                    self.probes["failed"] += 1
                    if len(self.probes["failures"]) < 30:
                        at = round(time.monotonic() - self.env.started_at, 1)
                        self.probes["failures"].append(f"{at}s {name}: {result}")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def _metadata_probe(topic: str, client_id: str) -> bytes:
    body = MetadataRequest(topics=(MetadataRequestTopic(topic_id=None, name=TopicName(topic)),),
                           allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    return codec.encode_request(body, 2, client_id)


async def _probe_http(address: tuple[str, int]) -> str | None:
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {address[0]}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        return None if line.split()[1:2] == [b"200"] else f"status {line[:40]!r}"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    finally:
        if writer is not None:
            writer.close()


def api_versions(address: tuple[str, int]) -> dict[int, tuple[int, int]]:
    """What the endpoint advertises (ApiVersions v3, a real round trip)."""
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(codec.encode_request(ApiVersionsRequest(client_software_name="fuzz", client_software_version="1"),
                                       1, "fuzz"))
        size = struct.unpack(">i", _recv(s, 4))[0]
        _, body = codec.decode_response(codec.response_schema(18, 3), _recv(s, size))
    return {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in body.api_keys}


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed while reading an answer")
        buf += chunk
    return buf


# -- entry points ------------------------------------------------------------------------------------------------
def start_environment(options: Options) -> tuple[Environment, list]:
    """The environment over the given clusters, or over two fresh local clusters (returned to stop them)."""
    own = []
    clusters = dict(options.clusters)
    if not clusters:
        from fedkafka.kafka.cluster import start_clusters

        own = start_clusters(["c1", "c2"], options.workdir / "kafka", timeout=300)  # a loaded machine is slow
        clusters = {c.name: c.bootstrap for c in own}
    env = Environment(options.workdir, clusters, tag=options.tag)
    try:
        env.start()
    except BaseException:
        env.stop()
        for c in own:
            c.stop()
        raise
    return env, own


def run(options: Options) -> dict:
    env, own = start_environment(options)
    good = None
    try:
        good = GoodClient(f"127.0.0.1:{env.services['nameservice'].port}", env.good_topic, options.good_rate)
        good.start()
        fuzz = Run(options, env)
        timing = asyncio.run(fuzz.main())
        good_report = good.finish()
        return report(options, env, fuzz, timing["elapsed"], good_report)
    finally:
        env.stop()
        for c in own:
            c.stop()


def report(options: Options, env: Environment, fuzz: Run, elapsed: float, good: dict) -> dict:
    st = fuzz.stats
    first = fuzz.crashes[0]["frames_sent_before"] if fuzz.crashes else None
    services = {name: {"peak_rss_mb": round(svc.peak_rss_kb / 1024, 1), "peak_fds": svc.peak_fds,
                       "starts": svc.starts, **svc.log_counts()} for name, svc in env.services.items()}
    slowest = sorted(st.slowest_by_api.items(), key=lambda kv: -kv[1])[:8]
    return {
        "seed": options.seed, "minutes": round(elapsed / 60, 2), "frames": st.frames, "sends": st.sends,
        "frames_per_second": round(st.frames / elapsed, 1) if elapsed else 0.0,
        "frames_per_target": dict(st.per_target), "outcomes": dict(st.outcomes),
        "deaths": fuzz.crashes, "frames_until_first_crash": first,
        "probes": fuzz.probes, "good_client": good, "services": services,
        "unanswered_by_api": dict(st.unanswered_by_api), "unanswered_samples": st.unanswered_samples,
        "slowest_answer_by_api": dict(slowest),
        "correlation_mismatches": st.mismatched,
        "wellformed_answered_by_close": dict(collections.Counter(r.api for r in fuzz.dropped())),
        "wellformed_answered_by_close_samples": [f"{r.target} {r.api} {r.mode}: {r.desc}"[:300]
                                                 for r in fuzz.dropped()[:30]],
        "connect_failures": st.connect_failures,
        "http": {"requests": fuzz.http_stats.requests, "status": fuzz.http_stats.status,
                 "server_errors": fuzz.http_stats.server_errors, "accepted_writes": fuzz.http_stats.accepted_writes,
                 "unauthenticated_ok": fuzz.http_stats.unauthenticated_ok, "unanswered": fuzz.http_stats.unanswered},
    }


def problems(rep: dict) -> list[str]:
    """What makes a run fail: a death, a failed probe, a good-client error or loss, a wrong answer id."""
    out = [f"{d['service']} died ({d['how']}) after {d['frames_sent_before']} frames: {d['corpus_file']}"
           for d in rep["deaths"]]
    if rep["probes"]["failed"]:
        out.append(f"{rep['probes']['failed']} health probes failed: {rep['probes']['failures'][:5]}")
    good = rep["good_client"]
    if good["errors"]:
        out.append(f"the good client saw {good['errors']} errors: {good['error_samples'][:5]}")
    if good["acked_not_consumed"]:
        out.append(f"{good['acked_not_consumed']} acked records never consumed")
    if rep["correlation_mismatches"]:
        out.append(f"answers with the wrong correlation id: {rep['correlation_mismatches'][:5]}")
    http = rep["http"]
    if http["server_errors"] or http["unauthenticated_ok"] or http["accepted_writes"]:
        out.append(f"HTTP: 5xx {http['server_errors'][:3]}, 2xx without the token {http['unauthenticated_ok'][:3]}, "
                   f"accepted writes {http['accepted_writes'][:3]}")
    return out


def replay(options: Options, path: Path) -> dict:
    """Send a corpus file's sends in order, each on a fresh connection; after each, look for deaths."""
    doc = json.loads(path.read_text())
    records = [Record.from_dict(d) for d in doc["sends"]]
    env, own = start_environment(options)
    killers, outcomes = [], []
    try:
        addresses = {"pproxy": env.address("pproxy"), "cproxy": env.address("cproxy"),
                     "nameservice>pproxy": env.address("nameservice"), "nameservice>cproxy": env.address("nameservice"),
                     "controller": env.address("controller"), "nameservice-http": ("127.0.0.1", env.ns_http_port)}
        for i, rec in enumerate(records):
            outcome = asyncio.run(_replay_one(addresses[rec.target], rec))
            outcomes.append(f"{i} {rec.target} {rec.api} {rec.mode}: {outcome}")
            time.sleep(0.5)
            for death in env.check():
                killers.append({"index": i, "seq": rec.seq, "target": rec.target, "api": rec.api, "desc": rec.desc,
                                "outcome": outcome, "service": death.service, "how": death.how,
                                "cause": death.cause})
                env.restart(death.service)
    finally:
        env.stop()
        for c in own:
            c.stop()
    return {"file": str(path), "sends": len(records), "killers": killers, "outcomes": outcomes}


async def _replay_one(address: tuple[str, int], rec: Record) -> str:
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
        writer.write(rec.data)
        await writer.drain()
        if rec.mode == "truncated":
            writer.write_eof()
        data = await asyncio.wait_for(reader.read(1 << 16), 12)
        return "answered" if data else "closed"
    except TimeoutError:
        return "no-answer"
    except OSError as exc:
        return type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
