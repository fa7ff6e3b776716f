"""The listener: worker processes sharing one port (SO_REUSEPORT), clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import gc
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedkafka.fencing import DRAIN_PATIENCE_S
from fedkafka.observe import logs
from fedkafka.observe.admin import AdminListener, admin_app, start_admin
from fedkafka.observe.supervise import Supervisor
from fedkafka.proxy.core.client_frames import ClientFrames, start_server
from fedkafka.proxy.core.connection import ClientConnection
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.limits import ByteBudget, ConnectionCounts, Limits
from fedkafka.proxy.core.metrics import ProxyMetrics
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.core.producer_ids import ProducerIdTable, StaticIdBlocks
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource, StaticViewSource
from fedkafka.security.listeners import Listener, TlsFiles, certificate_principal
from fedkafka.security.oauth import JwtValidator, OAuthSettings
from fedkafka.security.proxy_header import TrustedSources
from fedkafka.security.server_tls import ServerTls
from fedkafka.security.session import FAILED_AUTHENTICATION_DELAY_MS, SASL_MECHANISMS, Session
from fedkafka.security.upstream import PLAINTEXT, UpstreamConfig, UpstreamSource
from fedkafka.security.upstream_reload import UpstreamFile
from fedkafka.view.model import Endpoint, ProxyInfo, ProxyRole, View

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0
# After the grace, writes still out have their upstream connections closed and get this long more to end before a
# stopping proxy gives up deregistering (its lease then runs out, as before deregistrations)
WRITES_END_WAIT_S = 5.0
PR_SET_PDEATHSIG = 1
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's own ceiling for the dynamic threshold
TRIM_THRESHOLD_BYTES = 64 << 20
WORKER_STABLE_S = 10.0  # a worker that exits sooner after its start is started again with a growing delay
LISTEN_BACKLOG = 1024  # asyncio's default of 100 drops SYNs in a connect burst (each costs the client 1 s+)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    role: ProxyRole
    host: str
    port: int
    advertised_host: str
    pool: str = "default"
    view_file: Path | None = None
    controller: str | None = None
    token: str | None = None
    view_cache: Path | None = None  # last applied view, served when no controller answers at start
    workers: int = 1
    worker: int = 0  # this process's index among the workers (docs/DESIGN.md §4.10)
    # (this worker's member secret, the one of the previous process of its member, which exited), drawn by the
    # --workers parent; None: the process draws its own (docs/DESIGN.md §4.9, F4)
    member_secrets: tuple[str, str | None] | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    admin_listen: tuple[str, int] | None = None  # /metrics, /healthz, /readyz (worker i: port + i)
    # Client listeners; empty: one PLAINTEXT listener on host:port. Each is advertised with advertised_host.
    listeners: tuple[Listener, ...] = ()
    tls: TlsFiles = field(default_factory=TlsFiles)
    sasl_mechanisms: tuple[str, ...] = SASL_MECHANISMS
    oauth: OAuthSettings | None = None  # OAUTHBEARER: JWTs checked against this JWKS file
    authorization: bool = False  # on: the view's ACLs are enforced, anything they do not allow is denied
    super_users: frozenset[str] = frozenset()  # principals ACLs do not restrict (User:admin)
    upstream: UpstreamConfig = PLAINTEXT  # TLS and SASL towards the physical clusters' brokers
    upstream_file: Path | None = None  # where `upstream` was loaded from: loaded again when it changes
    # KIP-368: the longest a SASL session lasts before the client must re-authenticate (0: no limit)
    connections_max_reauth_ms: int = 0
    # Kafka's connection.failed.authentication.delay.ms: a failed SASL login is answered this much later
    failed_authentication_delay_ms: int = FAILED_AUTHENTICATION_DELAY_MS
    # relays (the name service hosts: addresses or CIDRs) whose connections start with a PROXY v2 header naming the
    # client, whose address is then the connection's (ACL host, per-IP cap, password checks); empty: none
    proxy_header_from: tuple[str, ...] = ()

    def all_listeners(self) -> tuple[Listener, ...]:
        return self.listeners or (Listener("PLAINTEXT", self.host, self.port),)


class InflightProduce:
    """Counts produce requests and group offset writes (OffsetCommit, DeleteGroups, OffsetDelete:
    dispatch.DRAINED_API_KEYS) per view version, so a new view is acked only after older ones finished.

    Never gives up: after `DRAIN_PATIENCE_S` it calls `close_upstream` (the upstream connections with a
    produce pending are closed, so those requests fail and their clients retry, and those of requests given up on
    once written, whose counts then go: `Dispatcher.close_drained_upstream`) and keeps waiting until they are
    answered. Acking with one of them still out could let it land after the seal (issue #12, hole 2), or on
    the old coordinator after a coordination move copied the offsets (docs/DESIGN.md §10.1). A group request still
    answering is not closed early (each of its calls answers within its own request timeout); one given up on
    once written (an abandoned offset write) has its connection closed with the abandoned produces
    (`AbandonedWrites.close`)."""

    def __init__(self, close_upstream: Callable[[], int] = lambda: 0) -> None:
        self.by_version: collections.Counter[int] = collections.Counter()
        self.close_upstream = close_upstream

    def older_than(self, version: int) -> int:
        return sum(n for v, n in self.by_version.items() if v < version)

    async def drain_before(self, version: int, patience_s: float = DRAIN_PATIENCE_S) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience_s
        while self.older_than(version):
            if loop.time() >= deadline:
                closed = self.close_upstream()
                log.warning("view %s: %d produce requests under older views still unanswered after %.0f s; "
                            "closed %d upstream connections to fail them", version, self.older_than(version),
                            patience_s, closed)
                deadline = loop.time() + 1.0  # a request still in its barrier may send later: close again
            await asyncio.sleep(0.005)


class ProxyServer:
    source: ControllerViewSource | StaticViewSource

    def __init__(self, config: ProxyConfig):
        self.config = config
        listeners = config.all_listeners()
        endpoints = tuple(Endpoint(lsn.protocol, config.advertised_host, lsn.port) for lsn in listeners)
        me = ProxyInfo(node_id=0, host=config.advertised_host, port=listeners[0].port, role=config.role,
                       pool=config.pool, listeners=endpoints if config.listeners else ())
        self.state = ProxyState(view=View(version=0), me=me)
        # new upstream connections take the file's settings as they are then (its changes: without a restart)
        self.upstream: UpstreamSource = (UpstreamFile(config.upstream_file, config.upstream)
                                         if config.upstream_file is not None else config.upstream)
        self.physical = PhysicalClusters(self.upstream)
        self.budget = ByteBudget(config.limits.max_buffered_bytes)
        self.pool = UpstreamPool(max_dedicated=config.limits.max_dedicated_per_broker,
                                 dedicated_wait_s=config.limits.dedicated_wait_s, upstream=self.upstream,
                                 budget=self.budget)
        self.counts = ConnectionCounts(config.limits.max_connections, config.limits.max_connections_per_ip)
        self.relays = TrustedSources(config.proxy_header_from)
        self.inflight = InflightProduce()  # its `close_upstream` is the dispatcher's (`_wrap_for_inflight`)
        if config.controller:
            instance = f"{config.advertised_host}:{listeners[0].port}"
            worker = config.worker if config.workers > 1 else None
            self.source = ControllerViewSource(config.controller, config.token or "", instance, self._add_block,
                                               cache=_view_cache(config, instance), worker=worker,
                                               chosen_secrets=config.member_secrets)
            self.producer_ids = ProducerIdTable(self.source.fetch_block)
        else:  # the CLI requires one of --controller and --view-file
            self.source = StaticViewSource(config.view_file)  # type: ignore[arg-type]
            blocks = StaticIdBlocks()  # no controller to allocate them: one random run, a block at a time
            self.producer_ids = ProducerIdTable(blocks.fetch)
            self.producer_ids.add_block(*blocks.take())
        self.connections: set[ClientConnection] = set()
        # set when stop() begins: a connection accepted before the listeners closed that reaches `_on_client` only
        # now (its TLS handshake or PROXY header done, or one loop step after its accept) is closed, not served
        self._stopping = False
        self.jwt_validator = JwtValidator(config.oauth) if config.oauth is not None else None
        self.server: asyncio.Server | None = None  # the first listener's
        self.servers: list[asyncio.Server] = []
        self.tls: ServerTls | None = None  # the TLS listeners' certificate (none without one)
        self.dispatcher: Dispatcher | None = None
        self.supervisor = Supervisor()
        self.metrics = ProxyMetrics(self) if config.admin_listen else None  # no listener: no per-request cost
        self.admin: AdminListener | None = None

    def _add_block(self, start: int, size: int) -> None:
        self.producer_ids.add_block(start, size)

    def _on_view(self, view: View) -> None:
        new = self.physical.set_clusters({c.id: c.bootstrap for c in view.clusters.values()})
        # A moved partition's new active segment: learn its leader now, before the first produce needs it.
        unknown = {chain.active.cluster for t in view.topics.values() for chain in t.partitions
                   if self.physical.leader(chain.active.cluster, chain.active.topic, chain.active.partition) is None}
        for cid in set(new) | unknown:
            self.physical.request_refresh(cid)

    async def start(self, sock: socket.socket | None = None) -> None:
        self.state.listeners.append(self._on_view)
        await self.source.start(self.state)
        await asyncio.gather(*(self.physical.refresh(c) for c in list(self.physical.clusters)))
        self.dispatcher = Dispatcher(state=self.state, physical=self.physical, producer_ids=self.producer_ids,
                                     pool=self.pool, max_fetch_wait_ms=self.config.limits.max_fetch_wait_ms,
                                     max_request_elements=self.config.limits.max_request_elements,
                                     max_dedicated_per_connection=self.config.limits.max_dedicated_per_connection,
                                     controller=self.source if isinstance(self.source, ControllerViewSource) else None,
                                     authorization=self.config.authorization, super_users=self.config.super_users,
                                     observer=self.metrics.requests if self.metrics else NULL_OBSERVER)
        self._wrap_for_inflight(self.dispatcher)
        self.supervisor.spawn("metadata-refresh", self.physical.run)
        for name, task in self.source.tasks(self.state, self.inflight.drain_before).items():
            self.supervisor.spawn(name, task)
        await self._listen(sock)
        if self.metrics is not None:
            assert self.config.admin_listen is not None  # metrics exist only with an admin listener
            self.admin = await start_admin(admin_app(self.metrics.render, self.health, self.readiness),
                                           *self.config.admin_listen)
        log.info("proxy node %s (%s) listening on %s, view %s, advertising %s", self.state.me.node_id,
                 self.config.role.value, ", ".join(map(str, self.config.all_listeners())),
                 self.state.view.version, self.dispatcher.advertised)

    async def _listen(self, sock: socket.socket | None) -> None:
        """One server per listener; `sock` (an inherited socket, workers) serves the first."""
        for i, listener in enumerate(self.config.all_listeners()):
            if listener.tls and self.tls is None:  # one for every TLS listener, renewed when its files change
                self.tls = ServerTls(self.config.tls)
            on_client = functools.partial(self._on_client, listener)
            ssl_ctx = self.tls if listener.tls else None
            # counted when accepted, before a TLS handshake, which gets the frame timeout (docs/DESIGN.md §4.12); a
            # relay's connection once its PROXY header named the client, within that timeout too (§11)
            serve = functools.partial(start_server, on_client, backlog=LISTEN_BACKLOG, ssl=ssl_ctx, budget=self.budget,
                                      admit=self.counts.admission,
                                      ssl_handshake_timeout=self.config.limits.frame_timeout_s, trusted=self.relays)
            if sock is not None and i == 0:
                server = await serve(sock=sock)
            else:
                server = await serve(listener.host, listener.port, reuse_port=True)
            self.servers.append(server)
        self.server = self.servers[0]

    def _wrap_for_inflight(self, dispatcher: Dispatcher) -> None:
        """Count produce requests and group offset writes (OffsetCommit, DeleteGroups, OffsetDelete) by the view
        version they were routed with: a new view is acked only once they are answered (a coordination move copies
        the offsets after that, docs/DESIGN.md §10.1, so no commit or deletion forwarded under an older view can
        land on the old coordinator after the copy). The
        dispatcher counts them (`writes_in_flight`): a coroutine wrapping its `start` cost one more per request."""
        dispatcher.writes_in_flight = self.inflight.by_version
        self.inflight.close_upstream = dispatcher.close_drained_upstream  # also the requests given up on once written

    def _session(self, listener: Listener, writer: asyncio.StreamWriter, peer) -> Session:
        """A connection's security state; on an SSL listener a client certificate names the principal."""
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        session = Session.for_listener(listener.protocol, self.config.sasl_mechanisms, str(peer), host=host,
                                       oauth=self.jwt_validator,
                                       max_reauth_ms=self.config.connections_max_reauth_ms,
                                       failed_authentication_delay_ms=self.config.failed_authentication_delay_ms)
        if listener.protocol == "SSL":
            ssl_object = writer.get_extra_info("ssl_object")
            # getpeercert() is empty unless a certificate was presented and verified; the principal is read from
            # its DER, as Java reads it (the decoded dict has neither the string types nor the raw values)
            verified = ssl_object is not None and bool(ssl_object.getpeercert())
            principal = certificate_principal(ssl_object.getpeercert(binary_form=True) if verified else None)
            if principal is not None:
                session.principal = principal
        return session

    async def _on_client(self, listener: Listener, reader: ClientFrames,
                         writer: asyncio.StreamWriter) -> None:
        """An admitted connection (`counts.admission`; its TLS handshake done): served until it ends. Its peer is
        the client's address: the socket's, or the one a trusted relay's PROXY header named (`ClientFrames.peer`).
        Once the stop began, closed at once: it was not among the connections told to stop reading, and the
        deregistration must not be sent while one can still start a request (docs/DESIGN.md §5.2)."""
        if self._stopping:
            writer.close()
            return
        peer = reader.peer or writer.get_extra_info("peername")
        assert self.dispatcher is not None  # start() makes it before the listener accepts anyone
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConnection(reader, writer, self.dispatcher, self.config.limits, self.budget,
                                self._session(listener, writer, peer))
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    async def stop(self) -> None:
        """Stop accepting, stop reading new requests, answer the ones in flight, then close."""
        self._stopping = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.stop_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE_S
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        quiet = await self._writes_ended(deadline)
        await self.supervisor.stop()  # no heartbeat, registration or view ack from here on
        if isinstance(self.source, ControllerViewSource):
            if quiet and not self.connections:  # none can start a request (`_on_client` closes late ones)
                await self.source.deregister(self.state)
            else:
                log.warning("not deregistering: %s; our lease runs out instead (a move counts us until our fence "
                            "and its grace)", f"{len(self.connections)} client connections still open"
                            if self.connections else f"{self.inflight.older_than(sys.maxsize)} writes still out")
        self.pool.close()
        if self.admin is not None:
            await self.admin.stop()

    async def _writes_ended(self, deadline: float) -> bool:
        """Whether this process provably sends no write upstream again (docs/DESIGN.md §4.9, deregistered): no
        client connection left (none can start a request) and no produce or group offset write counted as out
        (`writes_in_flight`: each answered, or given up on and past being written). Those still out
        WRITES_END_WAIT_S from now (at most until `deadline`, the shutdown grace's end, loop time) have their
        upstream connections closed, as the drain closes them before a frozen view's ack
        (`InflightProduce.drain_before`), and get WRITES_END_WAIT_S more to end."""
        if self.connections:
            return False
        loop = asyncio.get_running_loop()
        close_at = min(deadline, loop.time() + WRITES_END_WAIT_S)
        closed = False
        while (out := self.inflight.older_than(sys.maxsize)) and not self.connections:
            if loop.time() >= close_at + WRITES_END_WAIT_S:
                return False
            if loop.time() >= close_at and not closed:
                closed = True
                log.warning("shutting down: %d writes still unanswered; closing their upstream connections", out)
                self.inflight.close_upstream()
            await asyncio.sleep(0.005)
        return not self.connections

    def health(self) -> tuple[bool, dict]:
        """Alive: every background task runs (one waiting out its restart backoff does not)."""
        return self.supervisor.healthy(), {"tasks": self.supervisor.report()}

    def reload_files(self) -> None:
        """SIGHUP: the TLS listeners' certificate and the upstream config loaded again now (each keeps what it
        has, with one WARNING line, when its files cannot be loaded)."""
        if self.tls is not None:
            self.tls.reload()
        if isinstance(self.upstream, UpstreamFile):
            self.upstream.reload()

    def readiness(self) -> tuple[bool, dict]:
        """Serving: listening, a view applied, background tasks alive, and (taking produce) a valid lease."""
        lease = self.state.lease_valid()
        listening = self.server is not None and self.server.is_serving()
        needs_lease = self.config.role.produces()
        ok = listening and self.state.applied_version > 0 and self.supervisor.healthy() and (lease or not needs_lease)
        return ok, {"listening": listening, "view_version": self.state.view.version,
                    "applied_version": self.state.applied_version, "lease_valid": lease,
                    "tasks": self.supervisor.report()}


async def serve(config: ProxyConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    server = ProxyServer(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # SIGHUP: load the TLS and upstream files now
        loop.add_signal_handler(signal.SIGHUP, server.reload_files)
        # blocked until here (_run_one, the parent's _start): one sent before is handled now, not lost
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    await server.start()
    freeze_startup_objects()
    await stop.wait()
    log.info("shutting down: finishing in-flight requests")
    await server.stop()


def run(config: ProxyConfig) -> None:
    """Run `config.workers` processes on the same port (SO_REUSEPORT); uvloop where available."""
    if config.workers <= 1:
        _run_one(config)
        return
    logs.configure()
    WorkerSupervisor(config).run()


class WorkerSupervisor:
    """The parent of `--workers N`: starts each worker and starts it again when it exits, so a host keeps all its
    workers. A restarted worker registers as the same member (its index), takes the current view and acks it, so a
    move waits for it the grace (a write the exited process sent may still be appended), not its fence: it presents
    the exited process's member secret, which this parent drew (docs/DESIGN.md §4.10). SIGTERM/SIGINT stop every
    worker gracefully; SIGHUP is passed on to each (its TLS files and upstream config loaded again)."""

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.ctx = multiprocessing.get_context("spawn")
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.due: dict[int, float] = {}  # worker index -> when to start it again
        # worker index -> the member secret drawn for its latest process: passed to the next one only once that
        # process exited, so the controller waits the grace only, not its fence (docs/DESIGN.md §4.10)
        self.secrets: dict[int, str] = {}
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        for index in range(self.config.workers):
            self._start(index)
        while not self.stopping:
            multiprocessing.connection.wait([c.sentinel for c in self.children.values()], timeout=0.5)
            if not self.stopping:
                self._restart_exited()
        self._stop(None, None)  # again: a worker may have been started while the signal was handled
        for child in self.children.values():
            child.join()

    def _start(self, index: int) -> None:
        # called for an index only at the start or once its previous process exited (`_restart_exited`)
        secret, exited = secrets.token_urlsafe(32), self.secrets.get(index)
        config = replace(_worker_config(self.config, index), member_secrets=(secret, exited))
        self.secrets[index] = secret
        child = self.ctx.Process(target=_run_worker, args=(config, os.getpid()),
                                 daemon=False, name=f"fedkafka-proxy-worker-{index}")
        # SIGHUP is blocked while the worker starts: the worker inherits the mask (through fork and exec) and
        # unblocks it once its loop handles SIGHUP (serve()), so one forwarded meanwhile neither ends it nor is
        # lost; one sent to this parent meanwhile is passed on (to the new worker too) when it unblocks here
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            child.start()
            self.children[index], self.started[index] = child, time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.due.pop(index, None)

    def _restart_exited(self) -> None:
        now = time.monotonic()
        for index, child in list(self.children.items()):
            if child.is_alive() or child.exitcode is None:
                continue
            if index not in self.due:
                # a worker that ran a while starts again after 0.5 s; one that keeps dying backs off to 30 s
                quick = now - self.started[index] < WORKER_STABLE_S
                self.backoff[index] = min(self.backoff.get(index, 0.25) * 2, 30.0) if quick else 0.5
                self.due[index] = now + self.backoff[index]
                log.warning("proxy worker %d (pid %s) exited with %s; starting it again in %.1f s", index, child.pid,
                            child.exitcode, self.backoff[index])
            elif now >= self.due[index]:
                self._start(index)

    def _forward(self, signum, _frame) -> None:
        """SIGHUP to every worker (each loads the TLS files and the upstream config again)."""
        for child in self.children.values():
            if child.is_alive() and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def _stop(self, _signum, _frame) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.is_alive():
                child.terminate()


def _worker_config(config: ProxyConfig, index: int) -> ProxyConfig:
    """Worker `index` of several: its own admin port (port + index), so each worker's metrics can be scraped."""
    if config.admin_listen is None or config.admin_listen[1] == 0:
        return replace(config, worker=index)
    host, port = config.admin_listen
    return replace(config, worker=index, admin_listen=(host, port + index))


def _view_cache(config: ProxyConfig, instance: str) -> ViewCache | None:
    """Each worker saves the view it applied and the deadline it was granted: worker 0 at the given path (as a single
    process does, so going from one worker to several keeps it), worker i at PATH.w<i>."""
    if config.view_cache is None:
        return None
    if config.workers <= 1 or config.worker == 0:
        return ViewCache(config.view_cache, instance)
    path = config.view_cache.with_name(f"{config.view_cache.name}.w{config.worker}")
    return ViewCache(path, f"{instance}/w{config.worker}")


def _run_worker(config: ProxyConfig, parent: int) -> None:
    """A worker stops (gracefully) when its parent dies: no orphan keeps serving that no one restarts or stops."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above
        return
    _run_one(config)


def pin_malloc_thresholds() -> bool:
    """Serve the data path's large buffers (fetch answers, moved record sets: 0.1-32 MiB) from malloc's heap.

    glibc serves a buffer above its mmap threshold from fresh pages, which fault one by one (zeroed by the
    kernel) and go back to the kernel when freed; the threshold starts at 128 KiB and rises with the sizes freed,
    so whether a proxy pays this depended on its history: a moved fetch cost 1.4-1.6 CPU-s/GB with about 177 000
    page faults per GB, against 1.0-1.2 with none, in the same run (bench/README.md). Pinned, both thresholds stop
    moving. False where the C library has no mallopt (not glibc) or MALLOC_MMAP_THRESHOLD_ is set (the operator's).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def freeze_startup_objects() -> int:
    """Leave what the proxy holds from its start (modules, classes, functions, its first view: ~100 000 objects)
    out of the cyclic collector's full collections; how many objects that is.

    A full (generation 2) collection walks every tracked object: 40-60 ms of the event loop for ~100 000 (a stall
    of every connection), about once per GB produced, more with a larger view (bench/README.md "Native costs").
    Frozen objects are still freed by reference counting when they are let go (a replaced first view is); only one
    in a reference cycle that becomes garbage later is never collected, a bounded leak: this runs once, after
    a collection (no garbage frozen). Young objects and later views are collected as before (never gc.disable)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _run_one(config: ProxyConfig) -> None:
    # FEDKAFKA_LOG_LEVEL=DEBUG shows each refused, deduplicated or re-routed produce batch;
    # FEDKAFKA_LOG_FORMAT=json writes one JSON object per line
    logs.configure()
    # a SIGHUP before serve() takes it (renew the certificate) must not end the process, nor be lost: blocked
    # (pending) until serve() handles it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    pin_malloc_thresholds()
    try:
        import uvloop
        uvloop.run(serve(config))
    except ImportError:
        asyncio.run(serve(config))
