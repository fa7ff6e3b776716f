"""Where the proxy's view comes from: a static JSON file, or the controller (HTTP contract: docs/DESIGN.md §5.1, §5.2).

Controller mode: register (node id, lease, fence, producer id block), then follow the view stream and
heartbeat with the applied version. Each successful heartbeat renews the lease (membership of the view) and
the fence (how long this proxy may produce without another renewal, minutes: docs/DESIGN.md §4.9). While the
controller is unreachable the proxy keeps serving its last view, produce included, until the fence runs out;
then it refuses produce and the requests that map offsets with its view (Fetch, ListOffsets, OffsetForLeaderEpoch,
DeleteRecords, DescribeProducers: ProxyState.lease_valid) or read and write committed offsets where its view says
they live (OffsetCommit, OffsetFetch, DeleteGroups, OffsetDelete: the coordination cluster may have moved), and
keeps serving the rest (static stability: Metadata, group membership). A view is acked only once saved
(docs/DESIGN.md §4.9, F5).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from fedkafka.controllers import (
    ACTIVE_HEADER,
    DUPLICATE_REGISTRATION,
    MAX_PREDECESSOR_SECRETS,
    MEMBER_SECRET_HEADER,
    PREDECESSOR_SECRET_HEADER,
    PREDECESSOR_SEPARATOR,
    ControllerList,
    RoundWalk,
    active_hint,
    not_active_words,
    tls_verify,
    what_they_said,
)
from fedkafka.proxy.core.controller_calls import ADMIN_CALLS_AT_ONCE
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import SavedView, ViewCache
from fedkafka.view.model import View

log = logging.getLogger(__name__)

STREAM_KEEPALIVE_MS = 2_000
# connections of the controller client no admin call may take: the view stream, heartbeats (the stream's own ack
# heartbeat may overlap the periodic one), a registration's view fetch, a producer-id block, with room to spare
LEASE_CONNECTIONS = 16
# A stopping proxy's deregistration: a walk of the controllers (`_deregister_walk`, each asked once), this long at
# most for all its calls together (it only saves a restart up to one lease's wait)
DEREGISTER_TIMEOUT_S = 2.0
# failures of a request that never reached the controller: a deregistration failing so was surely not committed
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# failures of a controller's answer `start` moves on from, to the next controller of its round (unreachable, timed
# out, any answer but a grant or a 409, a view fetch failing): any other ends the start (raised)
MOVES_ON_FROM = (httpx.HTTPError, ValueError, KeyError)


def load_view_file(path: Path) -> tuple[View, int | None]:
    """The view in a JSON file (View.to_dict form), and the optional `proxy_node_id` it names for us."""
    try:
        data = json.loads(path.read_text())
        return View.from_dict(data), data.get("proxy_node_id")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"bad view file {path}: {e}") from None


class StaticViewSource:
    """A view file, re-read when it changes (an operator may replace it with a newer version)."""

    def __init__(self, path: Path):
        self.path = path
        self._mtime = 0.0

    async def start(self, state: ProxyState) -> None:
        view, node_id = load_view_file(self.path)
        self._mtime = self.path.stat().st_mtime
        if node_id is None:
            node_id = next((p.node_id for p in view.proxies
                            if p.host == state.me.host and p.port == state.me.port), 0)
        state.set_node_id(int(node_id))
        state.apply(view)
        state.applied_version = view.version

    def tasks(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> dict[str, Callable]:
        """The background tasks to supervise, by name."""
        return {"view-file": lambda: self._follow(state, drain)}

    async def _follow(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                mtime = self.path.stat().st_mtime
                if mtime != self._mtime:
                    self._mtime = mtime
                    view, _ = load_view_file(self.path)
                    if state.apply(view):
                        await drain(view.version)
                        state.applied_version = view.version
                        log.info("applied view %s from %s", view.version, self.path)
            except (OSError, ValueError) as e:
                log.warning("keeping view %s: %s", state.view.version, e)


class ControllerTooOld(RuntimeError):
    """The controller does not know proxy workers: it would count one worker's ack for all (docs/DESIGN.md §4.10)."""


class RegistrationRefused(httpx.HTTPStatusError):
    """409: a live registration holds this instance id under another address, listeners, pool or role, or holds
    our member with a secret we do not present (the controller names it and when its lease ends). Retried: a proxy
    moved to another host, or restarted, registers once the old registration's lease has run out (docs/DESIGN.md
    §5.2, §11)."""

    @property
    def our_previous_run(self) -> bool:
        """Our own member is live under a secret we do not hold: our previous run's (a restart), not another
        address's: the saved view is ours to serve meanwhile."""
        try:
            return self.response.json().get("kafka_error") == DUPLICATE_REGISTRATION
        except (ValueError, AttributeError):
            return False


class ControllerViewSource:
    def __init__(self, url: str, token: str, instance_id: str, on_block: Callable[[int, int], None],
                 cache: ViewCache | None = None, worker: int | None = None,
                 chosen_secrets: tuple[str, str | None] | None = None):
        """`worker`: this process's index among the workers of a proxy run with --workers N (None: the only one).
        Every worker registers under the node's `instance_id` and gets the node's id (what clients see) and a
        member id of its own, which it heartbeats as: the controller counts each worker's ack and fence."""
        self.controllers = ControllerList(url)  # several on one database: follow the active one
        self.headers = {"Authorization": f"Bearer {token}"}
        self.instance_id = instance_id
        self.worker = worker
        self.member_id: int | None = None  # this process's row at the controller, once registered
        # Our member secret, chosen once per process (memory only: a restart has a new one) and sent with each
        # registration, which holds our member to it: a registration whose answer we lost (committed, not received)
        # is taken again at once, as KRaft's broker-chosen incarnation id (§5.2). `member_secret`: the one our
        # latest registration answered (ours; a controller before proxy-chosen secrets draws its own; None from
        # one before member secrets); each heartbeat presents it, so no other holder of the service token renews
        # or acks as this member.
        self.own_secret = secrets.token_urlsafe(32) if chosen_secrets is None else chosen_secrets[0]
        # a worker's parent draws its secret, and passes on the exited previous process's (else the view cache's
        # lock may prove an exit, `_prove_previous_exit`): shown at registration, a move need not wait for that
        # process's fence (docs/DESIGN.md §4.9 F4, §4.10)
        self.predecessor_secrets: tuple[str, ...] = tuple(filter(None, chosen_secrets[1:] if chosen_secrets else ()))
        self.member_secret: str | None = None
        self.on_block = on_block
        self.cache = cache
        self.lease_ms = 10_000
        self.fence_ms = 10_000  # a controller that names no fence: produce stops with the lease, as before
        # One client for the lease (registration, view stream, heartbeats, producer-id blocks) and the admin calls
        # made for Kafka clients; admin calls hold at most ADMIN_CALLS_AT_ONCE of its connections (`admin`), so the
        # lease always finds one of its own: behind a wide CreateTopics, a heartbeat waited for a connection until
        # its pool timeout, and the proxy stopped producing once its fence ran out (docs/DESIGN.md §5.2).
        connections = ADMIN_CALLS_AT_ONCE + LEASE_CONNECTIONS
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), verify=tls_verify(),  # an https controller
                                        limits=httpx.Limits(max_connections=connections,
                                                            max_keepalive_connections=connections))
        self._admin_turns = asyncio.Semaphore(ADMIN_CALLS_AT_ONCE)
        self._drain: Callable[[int], Awaitable[None]] | None = None
        self._registered = False
        self._registering = asyncio.Lock()
        self._reregistering = 0  # registrations after a 404 under way: a renewal meanwhile grants no deadline
        # One registration at a time: two in flight at once (the view stream's ack heartbeat and the periodic one both
        # refused) may be answered in the other order than the controller committed them, and with a controller that
        # draws the secret the proxy would keep the superseded one (its next heartbeat refused, 403: produce stops);
        # with ours, one registration does what two would. `_registrations` counts the
        # registrations taken: a caller refused before the latest one need not register again (`_register`).
        self._registration = asyncio.Lock()
        self._registrations = 0
        self._saving = asyncio.Lock()
        self._unsaved: int | None = None  # a drained view whose save failed: acked once a save succeeds
        self._last_saved: View | None = None  # the view our last save wrote (or the cache's we started from)
        # the view cache's lock was held by a live process at our start: taken once free (`_take_lock_once_free`)
        self._lock_wanted = False
        self._taking_lock = asyncio.Lock()  # one take at a time: both heartbeat tasks try it (`_take_lock_once_free`)
        self._secret_file = asyncio.Lock()  # one write of the secret file at a time (its temp file is per process)

    async def start(self, state: ProxyState) -> None:
        """Register and fetch the first view; retried until the controller answers. With a view cache, the saved
        view comes first (docs/DESIGN.md §4.7): no older view of its federation is applied or saved after it,
        whatever a controller whose database lost commits serves, and the heartbeats report its version, so that
        controller numbers its next view past it (§3.3, "Lost commits"; §4.6). A round sends our registration to
        every listed controller at once (`_registration_round`: about one timeout, not one per controller that
        accepts and never answers), then takes a registration granted as soon as it is, else their answers in the
        order a round asks (`RoundWalk`: the current one, a standby's named one next). A proxy whose round
        fails serves its saved view at once and registers in `_register_from_cache` (called by the view-stream and
        heartbeat tasks); with the saved produce deadline unless a controller refused (409, or any 4xx) our
        registration in this `start` (§5.2: the active one may be taking our previous run's acks for the member). A
        5xx or a standby's 503 refuses nothing: a controller that cannot register us cannot take another process's
        acks either (F5, as when none answers)."""
        await self._prove_previous_exit()  # before any registration goes out: one whose answer is lost may commit
        saved = self._load_saved(state)
        delay, refused = 0.2, False
        while True:
            await self._take_lock_once_free(state)  # a 409 round waits for our previous run: it may exit meanwhile
            sent, answers = await self._registration_round(state)  # a round: each listed controller once
            walk = RoundWalk(self.controllers, log)
            try:
                while (url := walk.next()) is not None:
                    try:
                        await self._first_view(state, saved, await answers[url], sent)
                        return
                    except RegistrationRefused as e:  # the controller answers: no reason to serve a saved view...
                        if saved is not None and e.our_previous_run:  # ...unless our previous run holds it (restart)
                            self._wait_refused_log(e)
                            self._start_from_cache(state, saved, "our previous run's lease is live", produce=False)
                            return
                        refused = True
                        delay = await self._wait_refused(e, delay)
                        break  # the active controller refused: a new round, from it
                    except MOVES_ON_FROM as e:
                        log.warning("controller %s not ready: %s", url, e)
                        refused = refused or _client_error(e)  # a 401, 403, 422: a controller, up, said no
                        walk.failed(url, e)  # `walk.next` logs where the round goes
                else:  # no listed controller registered us
                    if saved is not None:
                        why = "a controller refused us" if refused else "no active controller answers"
                        self._start_from_cache(state, saved, why, produce=not refused)
                        return
                    delay = await _backed_off(delay)
            finally:
                _dropped(answers.values())  # a granted registration taken: the asks still out

    async def _prove_previous_exit(self) -> None:
        """Take the view cache's lock for this process's life and save our secret beside it, before our first
        registration; the previous holders' secrets, read then (saved under this very lock: `ViewCache.swap_secret`),
        are exited processes': shown as our predecessors', a move waits the grace after our registration, not that
        process's fence (docs/DESIGN.md §4.9, F4). A
        worker's parent that saw its previous process exit has said so already (the same secret, unless that
        process died before saving its own): its word is shown first, the file's beside it (the row may hold an
        earlier one the file kept: at most MAX_PREDECESSOR_SECRETS in all). The lock held by a live process, or
        unusable: we start as before, vouching for no one (and `ViewCache.load` gives no produce deadline)."""
        if self.cache is None:
            return
        try:
            if not await asyncio.to_thread(self.cache.lock_for_life):
                log.warning("%s is locked by another live process (a previous run of this proxy, or a second one "
                            "on this view cache): its exit cannot be proved, so a move waits for that process's "
                            "fence and 40 s after it", self.cache.lock_path)
                self._drop_parents_word()
                self._lock_wanted = True  # tried again before each registration and heartbeat
                return
            if not await asyncio.to_thread(self.cache.fence_only_our_locks):
                self._drop_parents_word(f"{self.cache.fence_path} does not name the lock we hold")
            previous = await asyncio.to_thread(self.cache.swap_secret, self.own_secret)
        except OSError as e:
            log.warning("exit of this proxy's previous run not provable (%s, %s: %s): a move waits for its fence",
                        self.cache.lock_path, type(e).__name__, e)
            if not self.cache.holds_lock:  # holding it, only the secret file failed: the word is as good as ever
                self._drop_parents_word()
            return
        if previous:
            log.info("%s: the previous run of this proxy has exited; shown as our predecessor at registration (%d "
                     "secret(s): the last answered run's and runs that exited before theirs was answered kept)",
                     self.cache.lock_path, len(previous))
            shown = dict.fromkeys((*self.predecessor_secrets, *previous))  # the parent's word first, once each
            self.predecessor_secrets = tuple(shown)[:MAX_PREDECESSOR_SECRETS]

    def _drop_parents_word(self, why: str = "without the view cache's lock") -> None:
        """Without the view cache's lock, or with a lock other than the one the saved deadline names
        (`ViewCache.fence_only_our_locks`), our parent's word vouches for too little: the dead worker exited, but
        a live holder of that lock may produce from the deadline it saved (`ViewCache.load`), under the fence the
        word would end (docs/DESIGN.md §4.9 F4)."""
        if self.predecessor_secrets:
            log.warning("our parent's word for our previous process not shown: %s, another process may produce "
                        "from its saved deadline; a move waits for its fence", why)
        self.predecessor_secrets = ()

    async def _confirm_own_secret(self) -> None:
        """A registration of ours was answered: the secrets of earlier runs saved beside the view cache are no
        longer needed by the next one, which shows ours (`ViewCache.confirm_secret`). Once per process."""
        cache = self.cache
        if cache is None:
            return
        async with self._secret_file:
            if not cache.secret_unconfirmed:
                return
            try:
                await asyncio.to_thread(cache.confirm_secret)
            except OSError as e:  # the earlier secrets stay: exited processes' all the same
                log.warning("member secret file %s not rewritten (%s: %s)", cache.secret_path, type(e).__name__, e)

    async def _take_lock_once_free(self, state: ProxyState) -> None:
        """Our start found the view cache's lock held by a live process (a restart racing its previous run's exit):
        take it once that process has exited (non-blocking, tried before each registration and heartbeat), and be
        from then on a holder like one that had it from its start (docs/DESIGN.md §4.9 F4, "Taken late"): our
        secret saved under it (confirmed at once if a registration of ours was answered already), the secrets its
        earlier holders saved (all exited now) shown at our next registrations, and our own deadline saved again
        under it. The parent's word, dropped at our start, stays dropped; no deadline of the cache is taken up (we
        serve our own view under our own registered deadline, never the one saved with another view). One take at a
        time (the view stream's ack heartbeat and the periodic one both call it): a second swap of the secret file
        would read our own secret as an earlier holder's, in place of theirs."""
        if not self._lock_wanted or self.cache is None:
            return
        async with self._taking_lock:
            if self._lock_wanted:  # not taken meanwhile by the other task
                await self._take_lock_now(state, self.cache)

    async def _take_lock_now(self, state: ProxyState, cache: ViewCache) -> None:
        """`_take_lock_once_free`'s take, under `_taking_lock`."""
        previous: list[str] | None = None
        try:  # held already: a call cancelled while `lock_for_life` ran in its thread, which took it after the cancel
            if not cache.holds_lock and not await asyncio.to_thread(cache.lock_for_life):
                return  # its holder lives: tried again next time
            self._lock_wanted = False
            async with self._secret_file:
                previous = await asyncio.to_thread(cache.swap_secret, self.own_secret)
        except OSError as e:  # as at our start: nothing shown from the file
            self._lock_wanted = False
            log.warning("%s taken late, but this proxy's exit not provable to its next run (%s: %s)",
                        cache.lock_path, type(e).__name__, e)
        if cache.holds_lock:  # ours from now on: our deadline bound to it (the next renewal saves it too)
            await self._bind_deadline(state, cache)
        if previous is None:
            return
        log.info("%s taken: its previous holder has exited (%d secret(s) saved under it shown at our next "
                 "registration)", cache.lock_path, len(previous))
        self.predecessor_secrets = tuple(previous)  # the parent's word was dropped at our start: the file's only
        if self._registrations:  # the row holds our secret already: saved alone, as a holder's would be by now
            await self._confirm_own_secret()

    async def _bind_deadline(self, state: ProxyState, cache: ViewCache) -> None:
        """Save our own view again, then our own deadline, now under the lock we took late; only a live deadline
        (granted by our own registration or renewal: a lockless start takes none from the cache). The view first:
        while we were lockless the previous holder, alive, kept saving its views to the same file, maybe an older one
        than we acked after ours; the deadline names our save (`ViewCache.view_save_id`), used only beside it, so a
        crash between the two leaves no usable deadline (docs/DESIGN.md §4.9 F4 "Taken late"). Our last save forgotten
        whatever our lease (under `_saving`: none in flight): lapsed now, the next deadline we save (a renewal's) saves
        our view again first, never naming our save from before the take, which the holder's may lie over."""
        async with self._saving:
            cache.view_save_id = None
        if state.lease_valid() and not self._reregistering:
            await self._save_fence(state)  # our view first: no save of ours named (`_save_fence`)

    async def _registration_round(self, state: ProxyState) -> tuple[float, dict[str, asyncio.Task[httpx.Response]]]:
        """`start`'s round: our registration sent to every listed controller at once (when: the first value), each
        one's answer a future (awaited: the response, or what the ask raised). It returns once every controller
        answered or failed, or as soon as one granted the registration (made the current controller: `start` takes
        it first, while its lease is fresh; the asks still out are dropped once it is taken), or as soon as `start`
        can decide on the answers in hand (`_refused_first`: a 409 of the controller its walk takes first, which a
        silent one listed after it held for a client timeout). One after the other, N controllers that accept and
        never answer held the start N client timeouts. At once is still one registration: the listed controllers
        share one database, only the active one registers (a standby answers 503; §5.2), each ask with our own
        member secret."""
        urls, sent = list(self.controllers.urls), time.monotonic()
        asking = {url: asyncio.ensure_future(self._send_registration(url, state)) for url in urls}
        waiting: set[asyncio.Task[httpx.Response]] = set(asking.values())
        try:
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                granted = next((url for url, ask in asking.items() if ask in done and _granted(ask)), None)
                if granted is not None:
                    if granted != self.controllers.current:
                        log.info("following controller %s", granted)
                    self.controllers.current = granted
                    break
                if _refused_first(self.controllers, asking):
                    break
        except BaseException:  # cancelled (the proxy stopping while it starts): no ask left out
            _dropped(asking.values())
            raise
        return sent, asking

    async def _first_view(self, state: ProxyState, saved: SavedView | None, answer: httpx.Response,
                          sent: float) -> None:
        """`start`'s attempt at the current controller, given its `answer` to the round's registration (sent at
        `sent`): take the registration, then take, ack and save the controller's view."""
        async with self._registration:
            body = self._registered_by(state, answer)
        await self._confirm_own_secret()
        state.lease_deadline = sent + self.fence_ms / 1000
        self._take_block(body)
        resp = await self.client.get(f"{self.controllers.current}/v1/view", headers=self.headers)
        resp.raise_for_status()
        view = View.from_dict(resp.json())
        if saved is not None and view.federation_id != state.view.federation_id:
            await self._forget_saved_view(state, view.federation_id)
        state.apply(view)  # not older than the saved view (equal: the saved one is kept)
        await self._ack_view(state, state.view.version)
        await self._save_fence(state)  # only now: a deadline on disk always goes with the view it covers
        self._registered = True

    def _load_saved(self, state: ProxyState) -> SavedView | None:
        """Take the saved view (if any, of this instance and saved under one of our controllers) as this proxy's
        view before any controller's: what it applied and acked last. No produce until a controller renews."""
        saved = self.cache.load(self.controllers.urls) if self.cache is not None else None
        if saved is None:
            return None
        state.set_node_id(saved.node_id)
        state.apply(saved.view)
        state.applied_version = saved.view.version
        self._last_saved = saved.view
        state.lease_deadline = time.monotonic()
        return saved

    def _start_from_cache(self, state: ProxyState, saved: SavedView, why: str = "no controller answers",
                          produce: bool = True) -> None:
        """No controller answers: serve the saved view, produce only until the deadline the controller last
        granted us (docs/DESIGN.md §4.9, F5): a wall-clock time on disk, back to this process's monotonic clock.
        `produce` False (a controller refused us, or answered without registering us: our previous run may still
        be alive, a supervisor's restart race, and ack for the member, so a move may seal on its acks): the
        deadline stays past, so the proxy serves Metadata and group requests only (Produce, Fetch, ListOffsets and
        OffsetForLeaderEpoch are refused past the fence, readiness not ready) until it registers (§5.2)."""
        assert self.cache is not None
        state.set_node_id(saved.node_id)  # a registration that answered before the view fetch failed may have set it
        if produce:
            state.lease_deadline = time.monotonic() + (saved.produce_until - time.time())
        log.warning("%s: serving saved view %s from %s (produce %s)", why, saved.view.version,
                    self.cache.path, f"until {time.ctime(saved.produce_until)}" if state.lease_valid() else "refused")

    async def _forget_saved_view(self, state: ProxyState, federation_id: str) -> None:
        """The controller serves federation `federation_id`, not the saved view's: that view is another
        federation's (the proxy was pointed elsewhere, or the database was made anew). Its deadline is dropped
        on disk first (a restart must never produce under the new federation's view until that deadline), then
        the proxy holds an empty view of the new federation, so the controller's view is taken whatever its
        version, and reports no applied version until it acks that one."""
        log.warning("controller %s serves federation %r, not %r of the saved view %s: serving its view instead",
                    self.controllers.current, federation_id, state.view.federation_id, state.view.version)
        if self.cache is not None:
            async with self._saving:  # none in flight
                self.cache.view_save_id = None  # the old federation's save: no deadline of the new one names it
            try:
                await asyncio.to_thread(self.cache.save_fence, 0.0)
            except OSError as e:  # the old federation's deadline must not go with a view of this one: save no more
                log.error("produce deadline %s not reset (%s): this process saves no view from now on; the disk "
                          "keeps the old federation's view and deadline", self.cache.fence_path, e)
                self.cache = None
        state.replace(View(version=0, federation_id=federation_id))
        self._last_saved = None  # the old federation's: never saved again
        state.applied_version = 0

    async def _register(self, state: ProxyState, refresh_view: bool = False, unless_since: int | None = None) -> None:
        """Register (again), one registration at a time: the member secret kept is the one of the registration the
        controller committed last. `unless_since`: the count of registrations taken when the caller's reason was
        sent (a heartbeat then refused, 404 or 403); if one was taken since, it registered after that heartbeat and
        holds the member's current secret: not again (`_heartbeat_once` renews at once with it)."""
        async with self._registration:
            if unless_since is not None and unless_since != self._registrations:
                return
            await self._register_now(state, refresh_view)

    async def _register_now(self, state: ProxyState, refresh_view: bool) -> None:
        """`_register`'s registration. `refresh_view`: our lease ran out, so the controller stopped waiting for our
        acks and may have read seals of segments we routed writes to; take the current view, and wait until nothing
        routed under an older one is out, before the new deadline counts (docs/DESIGN.md §4.9, F3)."""
        self._reregistering += refresh_view
        try:
            if refresh_view:  # first what our own view already drains (the stream's wait), before the new lease
                await self._drain_older(state)  # counts: a long drain does not use it up
            sent = time.monotonic()
            body = self._registered_by(state, await self._send_registration(self.controllers.current, state))
            await self._confirm_own_secret()
            if refresh_view:
                await self._take_current_view(state)
            state.lease_deadline = sent + self.fence_ms / 1000
        finally:
            self._reregistering -= refresh_view
        if refresh_view:
            await self._save_fence(state)
        self._take_block(body)

    async def _send_registration(self, url: str, state: ProxyState) -> httpx.Response:
        """Our registration, sent to the controller at `url`: its answer, not yet taken (`_registered_by`)."""
        # our member's secret: while our lease is live the controller registers it again only for the holder of
        # the secret (409 otherwise, §5.2), so a 403/404 race, or a retry after a lost answer, registers at once
        headers = {**self.headers, MEMBER_SECRET_HEADER: self.member_secret or self.own_secret}
        if self.predecessor_secrets:  # the exited processes we replace (a worker's parent or our lock vouches, §4.9 F4)
            headers[PREDECESSOR_SECRET_HEADER] = PREDECESSOR_SEPARATOR.join(self.predecessor_secrets)
        return await self.client.post(f"{url}/v1/proxies", headers=headers, json={
            "instance_id": self.instance_id, "host": state.me.host, "port": state.me.port,
            "role": state.me.role.value, "pool": state.me.pool,
            "listeners": [[e.protocol, e.host, e.port] for e in state.me.listeners],
            # our heartbeats present it: hold our member to it (§5.2). A bool, the secret in the header: a
            # controller before proxy-chosen secrets refuses a string, and draws one (answered) for `True`
            "member_secret": True,
            **({"worker": self.worker} if self.worker is not None else {})})

    def _registered_by(self, state: ProxyState, resp: httpx.Response) -> dict:
        """Take the current controller's answer to our registration (RegistrationRefused for a 409, HTTPStatusError
        for any other error): our node and member ids, our member's secret, lease and fence. Its body."""
        if (error := _answer_error(resp, self.instance_id)) is not None:
            raise error
        body = resp.json()
        if self.worker is not None and body.get("worker") != self.worker:
            raise ControllerTooOld(f"controller {self.controllers.current} does not count proxy workers one "
                                   "by one (it would take one worker's ack for all): upgrade it, or run one worker")
        state.set_node_id(int(body["node_id"]))
        self.member_id = int(body.get("member_id", body["node_id"]))
        self.member_secret = body.get("member_secret")  # ours; None from a controller before member secrets
        self._registrations += 1
        self._take_times(body)
        return body

    def _take_block(self, body: dict) -> None:
        """The producer id block a registration's answer carries, if any."""
        block = body.get("producer_id_block")
        if block:
            self.on_block(int(block["start"]), int(block["size"]))

    async def _take_current_view(self, state: ProxyState) -> None:
        """Apply the controller's current view, newer than ours or not, and ack it once nothing routed under an
        older view is out: the view stream may still be draining the view we hold (its ack pending), and a write
        routed under the one before, held while fenced, must not go out on the new deadline (§4.9, F3)."""
        current = await self.client.get(f"{self.controllers.current}/v1/view", headers=self.headers)
        current.raise_for_status()
        state.apply(View.from_dict(current.json()))
        await self._drain_older(state)
        if state.applied_version < state.view.version:  # an ack like any other: drained, then saved
            await self._ack_view(state, state.view.version)

    async def _drain_older(self, state: ProxyState) -> None:
        """Wait until no write routed under a view older than the one we serve is out. Bounded: the fence holds
        meanwhile, so a held write is refused when it would be sent; a sent one is answered, failed by the drain
        closing its connection after DRAIN_PATIENCE_S, or timed out at REQUEST_TIMEOUT_S."""
        if self._drain is not None:
            await self._drain(state.view.version)

    async def fetch_block(self) -> tuple[int, int]:
        """A logical producer-id block from the active controller (docs/DESIGN.md §5.3): a walk of the listed
        controllers (`RoundWalk`, the start round's order: the current one, the active one a standby names, else the
        next), each asked once, going on only past a controller that surely granted nothing: a call never sent
        (NEVER_SENT), or a 503 naming the active one (the gate's or NotLeader's, answered before the route runs).
        Any other failure ends the walk, raised: the block may have been granted (a read timed out, the connection
        lost, a 5xx), and is not asked for again here. Lost so, it is only ids no one hands out: the counter moves by
        compare-and-set, so no later block overlaps it, and 2**63 ids leave room to waste. One walk per refill
        (`ProducerIdTable._schedule_refill`) and the first grant ends it: never two blocks asked for at once. The
        walk runs on a copy of the list (the heartbeat and view stream follow the real one meanwhile); the
        controller that granted becomes the current one unless the list moved meanwhile: the heartbeat's move is newer
        news than the walk's (the granting one may have lost the leader row since). ConnectionError naming each one
        asked if none granted."""
        started_at = self.controllers.current
        walk = RoundWalk(copy.copy(self.controllers))
        told: dict[str, str] = {}
        while (url := walk.next()) is not None:
            try:
                resp = await self.client.post(f"{url}/v1/producer-id-blocks", headers=self.headers)
            except NEVER_SENT as e:
                told[url] = f"unreachable ({str(e) or type(e).__name__})"
                walk.failed(url, e)
                continue
            if resp.status_code == 503 and ACTIVE_HEADER in resp.headers:  # refused before the route ran
                told[url] = not_active_words(url, resp.headers[ACTIVE_HEADER])
                walk.failed(url, hint=resp.headers[ACTIVE_HEADER])
                continue
            resp.raise_for_status()
            body = resp.json()
            if url != self.controllers.current and self.controllers.current == started_at:
                log.info("following controller %s", url)
                self.controllers.current = url
            return int(body["start"]), int(body["size"])
        raise ConnectionError(f"no controller granted a producer-id block ({what_they_said(told)})")

    async def admin(self, method: str, path: str, body: Any, timeout_s: float) -> tuple[int, Any]:
        """One admin-API request on behalf of a Kafka client (CreateTopics, AlterConfigs, ...): (status, JSON),
        from the active controller. None reachable raises ConnectionError, a slow one TimeoutError (not retried
        elsewhere: it may have been applied). At most ADMIN_CALLS_AT_ONCE at a time: waiting for a turn counts
        against `timeout_s` (TimeoutError, never sent)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._admin_turns.acquire()
        except TimeoutError:
            raise TimeoutError(f"not sent: no turn among the {ADMIN_CALLS_AT_ONCE} admin calls to the controller "
                               f"at a time in {timeout_s:.0f} s") from None
        try:
            return await self._admin_once(method, path, body, deadline)
        finally:
            self._admin_turns.release()

    async def _admin_once(self, method: str, path: str, body: Any, deadline: float) -> tuple[int, Any]:
        failure: BaseException | None = None
        loop = asyncio.get_running_loop()
        for _ in self.controllers.urls:
            url = self.controllers.current
            timeout_s = max(deadline - loop.time(), 0.001)
            try:
                resp = await self.client.request(method, f"{url}{path}", headers=self.headers, json=body,
                                                 timeout=httpx.Timeout(timeout_s))
            except httpx.TimeoutException as e:
                raise TimeoutError(f"controller {url} did not answer in {timeout_s:.0f} s") from e
            except httpx.HTTPError as e:
                failure = e
                self._failed(url, e)
                continue
            if resp.status_code == 503 and resp.headers.get(ACTIVE_HEADER):  # a standby: ask the one it names
                failure = ConnectionError(f"controller {url} stands by")
                self.controllers.failed(url, resp.headers[ACTIVE_HEADER])
                continue
            try:
                answer = resp.json() if resp.content else None
            except ValueError:
                answer = {"detail": resp.text[:500]}
            return resp.status_code, answer
        raise ConnectionError(f"no controller answered ({', '.join(self.controllers.urls)}): {failure}")

    def tasks(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> dict[str, Callable]:
        """The background tasks to supervise, by name: each is restarted alone when it dies."""
        self._drain = drain
        return {"view-stream": lambda: self._poll(state, drain), "heartbeat": lambda: self._heartbeat(state)}

    async def _register_from_cache(self, state: ProxyState) -> None:
        """Started from the saved view: register (taking the current view, drained, before the new lease
        counts) as soon as a controller answers."""
        delay = 0.2
        async with self._registering:  # both supervised tasks start here; the first one registers
            while not self._registered:
                url = self.controllers.current
                try:
                    await self._take_lock_once_free(state)  # before it: an exited holder's secret vouched for
                    await self._leave_another_federation(state)
                    await self._register(state, refresh_view=True)
                    self._registered = True
                    log.info("registered with %s; serving view %s", self.controllers.current, state.view.version)
                except RegistrationRefused as e:  # another process's registration is live: not ours to produce
                    state.lease_deadline = min(state.lease_deadline or 0.0, time.monotonic())  # under (§5.2)
                    delay = await self._wait_refused(e, delay)
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    log.warning("controller %s still unreachable (serving saved view %s): %s", url,
                                state.view.version, e)
                    if _client_error(e):  # refused, as in `start`: the saved deadline is not ours to use
                        state.lease_deadline = min(state.lease_deadline or 0.0, time.monotonic())
                    self._failed(url, e)
                    delay = await _backed_off(delay)

    async def _leave_another_federation(self, state: ProxyState) -> None:
        """Started from the saved view, before registering: a controller of another federation than the saved
        view's (same URL, another database) gets neither that view nor its version (which it would take for
        commits its database lost). Produce under the old view stops and drains first."""
        resp = await self.client.get(f"{self.controllers.current}/v1/view", headers=self.headers)
        resp.raise_for_status()
        federation_id = View.from_dict(resp.json()).federation_id
        if federation_id == state.view.federation_id or state.view.version == 0:
            return
        state.lease_deadline = min(state.lease_deadline or 0.0, time.monotonic())
        if self._drain is not None:
            await self._drain(state.view.version + 1)
        await self._forget_saved_view(state, federation_id)

    @classmethod
    async def _wait_refused(cls, refusal: RegistrationRefused, delay: float) -> float:
        """Log a refused registration and wait before the next attempt: the next delay (doubling, at most 5 s, so
        a proxy that moved, or restarted, registers within seconds of the old lease's end)."""
        cls._wait_refused_log(refusal, delay)
        return await _backed_off(delay)

    @staticmethod
    def _wait_refused_log(refusal: RegistrationRefused, delay: float | None = None) -> None:
        log.error("%s; trying again%s (a proxy restarted while its previous run's lease is live, moved to another "
                  "host, or given another pool or role, registers once the old registration's lease has run out; "
                  "two proxies configured with one instance id never do)", refusal,
                  f" in {delay:.1f} s" if delay is not None else "")

    async def _ack_view(self, state: ProxyState, version: int) -> None:
        """The drained view `version` counts as applied (the heartbeats ack it) only once saved: the saved
        version covers every acked one. A view that could not be saved (disk full) is not acked, so no move
        seals on it while a restart of this proxy would serve the older saved view until its saved deadline
        (docs/DESIGN.md §4.9, F5); every heartbeat tries the save again."""
        self._unsaved = version
        saved = await self._save_view(state)
        if saved is not None and saved >= version:
            state.applied_version = max(state.applied_version, version)
            if self._unsaved == version:
                self._unsaved = None

    async def _save_view(self, state: ProxyState, again: bool = False) -> int | None:
        """Persist the view this proxy serves: its version, None if the write failed. `again`: the view saved last
        (drained before, unlike one applied whose drain is under way), for a deadline to name a save of our own."""
        if self.cache is None:
            return state.view.version
        async with self._saving:
            view = self._last_saved if again else state.view  # read under the lock: saves land in the views' order
            if view is None:
                return None
            try:
                await asyncio.to_thread(self.cache.save_view, view, state.me.node_id, self.controllers.urls)
            except OSError as e:
                log.warning("view %s not saved to %s (not acked until it is): %s", view.version, self.cache.path, e)
                return None
            self._last_saved = view
        return view.version

    async def _save_fence(self, state: ProxyState) -> None:
        """The deadline on disk goes with the saved view: while the view served is not saved, the saved deadline
        stays where it was (one granted while the saved view was the one acked). Moved forward beside an older
        view, it would let a restart without a controller write under that view after a move this proxy's
        lapsed lease let seal (docs/DESIGN.md §4.9, F5)."""
        if self.cache is None or state.lease_deadline is None or self._unsaved is not None:
            return
        if self.cache.view_save_id is None and await self._save_view(state, again=True) is None:
            return  # no view saved by this process yet (started from the cache): a deadline goes with one of ours
        until = time.time() + (state.lease_deadline - time.monotonic())
        try:
            await asyncio.to_thread(self.cache.save_fence, until)
        except OSError as e:
            log.warning("produce deadline not saved to %s: %s", self.cache.fence_path, e)

    async def _poll(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> None:
        """Follow the controller's view stream (one JSON view per line, a blank keepalive line every
        STREAM_KEEPALIVE_MS): one open connection instead of a long-poll round trip per change."""
        await self._register_from_cache(state)
        if state.applied_version < state.view.version:
            # A previous run died between taking this view and acking it (a supervised restart): finish it,
            # or the controller would wait for this ack until its move times out.
            state.notify()
            await drain(state.view.version)
            await self._ack_view(state, state.view.version)
            await self._heartbeat_once(state)
        while True:
            url = self.controllers.current
            try:
                async with self.client.stream(
                        "GET", f"{url}/v1/view/stream", headers=self.headers,
                        params={"after": state.view.version, "keepalive_ms": STREAM_KEEPALIVE_MS},
                        timeout=httpx.Timeout(10.0, read=STREAM_KEEPALIVE_MS / 1000 * 3)) as resp:
                    resp.raise_for_status()
                    async for line in resp.aiter_lines():
                        if not line.strip():
                            continue  # keepalive: the stream is alive
                        await self._take_view(state, View.from_dict(json.loads(line)), drain)
                raise httpx.RemoteProtocolError("view stream ended")
            except RegistrationRefused as e:  # the ack heartbeat's registration again: the leader answered
                self._wait_refused_log(e)
                await asyncio.sleep(1.0)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.warning("view stream from %s failed (serving view %s): %s", url, state.view.version, e)
                self._failed(url, e)
                await asyncio.sleep(1.0)

    async def _take_view(self, state: ProxyState, view: View, drain: Callable[[int], Awaitable[None]]) -> None:
        """A view from the stream: apply it if newer, drain the older views' produce (docs/DESIGN.md §6.1),
        save it, ack it promptly (the controller waits for it)."""
        if state.apply(view):
            await drain(view.version)
            await self._ack_view(state, view.version)
            await self._heartbeat_once(state)

    async def _heartbeat(self, state: ProxyState) -> None:
        await self._register_from_cache(state)
        while True:
            await asyncio.sleep(max(self.lease_ms / 3000, 0.05))
            url = self.controllers.current
            try:
                await self._heartbeat_once(state)
            except RegistrationRefused as e:  # the leader's answer to our registration again, not its failure:
                self._wait_refused_log(e)  # no next controller; produce stopped with the 403/404 before it
            except (httpx.HTTPError, ValueError, KeyError) as e:
                left = (state.lease_deadline or 0.0) - time.monotonic()
                log.warning("heartbeat to %s failed (%s): %s", url, f"may produce {left:.0f} s more" if left > 0
                            else "fenced: produce refused until a controller renews", e)
                self._failed(url, e)

    def _failed(self, url: str, error: BaseException) -> None:
        """Move on to the active controller a standby named, else the next one in the list."""
        following = self.controllers.failed(url, active_hint(error))
        if following != url:
            log.info("following controller %s", following)

    async def _heartbeat_once(self, state: ProxyState, renew_after_registering: bool = True) -> None:
        """Renew lease and fence, ack the applied view. Dropped (404: the fence ran out), register again and then
        renew at once: the new lease counts from the controller's registration, and the registration's view, drain
        and save can take most of it on a loaded machine; renewed only a third of a lease later, it could run out
        again, and the views would drop and list this proxy again, moving partition leaders twice (§4.2)."""
        if self._unsaved is not None and self._unsaved == state.view.version:
            await self._ack_view(state, self._unsaved)  # its save failed: try again before acking anything
        await self._take_lock_once_free(state)  # before the renewal, whose deadline is then saved under it
        sent, registrations = time.monotonic(), self._registrations
        member = self.member_id if self.member_id is not None else state.me.node_id
        resp = await self.client.post(f"{self.controllers.current}/v1/proxies/{member}/heartbeat",
                                      headers=self._member_headers(),
                                      json={"applied_version": state.applied_version, "load": {}})
        if resp.status_code == 403:  # our secret is not the member's latest: it was registered again since
            log.warning("heartbeat as member %s refused (%s): registering again", member, _detail(resp))
        if resp.status_code in (403, 404):  # the controller dropped us (lease ran out), or superseded us: register
            state.lease_deadline = min(state.lease_deadline or 0.0, time.monotonic())  # no produce meanwhile
            await self._register(state, refresh_view=True, unless_since=registrations)
            if renew_after_registering:  # once: a 404 again registers again, and the next round renews
                await self._heartbeat_once(state, renew_after_registering=False)
            return
        resp.raise_for_status()
        self._take_times(resp.json())
        if self._reregistering:  # another task registers again: its drain, not this renewal, ends the fence (F3)
            return
        # measured from when we sent it, the controller's from when it took it: ours is never the later one
        state.lease_deadline = sent + self.fence_ms / 1000
        await self._save_fence(state)

    async def deregister(self, state: ProxyState) -> bool:
        """On a clean stop, once nothing of ours can be written upstream again (`ProxyServer.stop`) and no
        heartbeat or registration task runs: end our member's lease and fence at the controller, so a restart
        registers at once and a move waits for us the grace only (docs/DESIGN.md §5.2, §4.9 "deregistered"). A
        walk of calls, 2 s in all, passed on after a 503 or a call never sent (`_deregister_walk`); a failure is
        only logged (the lease runs out instead). The saved deadline goes to 0 first, for good
        (`ViewCache.end_fence`): a restart from the saved view without a controller must not produce on a deadline
        the controller ended; not saved, no deregistration. Whether it was committed."""
        member, secret = self.member_id, self.member_secret
        if member is None or secret is None:  # never registered, or by a controller before member secrets
            return False
        state.lease_deadline = min(state.lease_deadline or 0.0, time.monotonic())  # no produce from here on
        previous = None
        if self.cache is not None:
            try:
                previous = await asyncio.to_thread(self.cache.end_fence)
            except OSError as e:
                log.warning("not deregistering: produce deadline %s not reset (%s); our lease runs out instead",
                            self.cache.fence_path, e)
                return False
        walk = RoundWalk(self.controllers, log)
        try:
            async with asyncio.timeout(DEREGISTER_TIMEOUT_S):
                url, resp = await self._deregister_walk(member, walk)
        except (httpx.HTTPError, TimeoutError) as e:
            # the controller the failing call went to: the list's current one has moved on past it already
            log.warning("deregistration of member %s at %s failed (%s); our lease runs out instead", member,
                        walk.last, type(e).__name__)
            if isinstance(e, NEVER_SENT):  # not committed: a restart without a controller may use the deadline
                await self._restore_fence(previous)
            return False
        if resp.status_code != 200:
            log.warning("deregistration of member %s refused at %s (%d: %s); our lease runs out instead", member, url,
                        resp.status_code, _detail(resp))
            if resp.status_code < 500:  # refused before anything was written (a 5xx may follow the commit)
                await self._restore_fence(previous)
            return False
        log.info("deregistered member %s (%s): a restart registers at once", member, self.instance_id)
        return True

    async def _deregister_walk(self, member: int, walk: RoundWalk) -> tuple[str, httpx.Response]:
        """Send the deregistration to the current controller, and on to the active one a standby's 503 names, else
        the next listed, each once (`RoundWalk`), while the answer is a 503 (a standby, or a controller that lost
        the leader row: nothing written, docs/DESIGN.md §3.6) or the call was never sent: the controller and the
        answer taken, the last 503 if no controller took it. Raises the last never-sent error if none answered
        (`walk.last` names the controller it came from)."""
        answered: tuple[str, httpx.Response] | None = None
        error: httpx.HTTPError | None = None
        while (url := walk.next()) is not None:
            try:
                resp = await self.client.post(f"{url}/v1/proxies/{member}/deregister", headers=self._member_headers(),
                                              timeout=httpx.Timeout(DEREGISTER_TIMEOUT_S))
            except NEVER_SENT as e:
                error = e
            else:
                if resp.status_code != 503:
                    return url, resp
                answered = url, resp
                log.info("deregistration of member %s not taken at %s (503: %s)", member, url, _detail(resp))
                error = httpx.HTTPStatusError("not the active controller", request=resp.request, response=resp)
            walk.failed(url, error)
        if answered is not None:  # a 503 answered: kept as the outcome (a 5xx keeps the saved deadline at 0)
            return answered
        assert error is not None  # the walk asks the current controller at least
        raise error

    async def _restore_fence(self, previous: float | None) -> None:
        """The deregistration surely was not committed: the saved deadline goes back to what it was (`deregister`)."""
        if self.cache is None or previous is None:
            return
        try:
            await asyncio.to_thread(self.cache.restore_fence, previous)
        except OSError as e:  # 0 stays: the safe side (a restart without a controller does not produce)
            log.warning("produce deadline %s not restored (%s)", self.cache.fence_path, e)

    def _member_headers(self) -> dict[str, str]:
        """The service token, and our member's secret once a registration gave us one."""
        if self.member_secret is None:
            return self.headers
        return {**self.headers, MEMBER_SECRET_HEADER: self.member_secret}

    def _take_times(self, body: dict) -> None:
        self.lease_ms = int(body["lease_ms"])
        self.fence_ms = int(body.get("fence_ms", self.lease_ms))


def _detail(resp: httpx.Response) -> str:
    """The controller's reason for an error answer (its JSON `detail`), else the start of the body."""
    try:
        return str(resp.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:500]


def _refused_first(controllers: ControllerList, asking: dict[str, asyncio.Task[httpx.Response]]) -> bool:
    """Whether `start`'s walk of a round's answers (`RoundWalk`) reaches a 409 before an ask still out: that
    refusal ends the round whatever the others answer (a grant among them is taken by the round first). Walked on a
    copy: `start` moves the list itself when it takes the answers."""
    walk = RoundWalk(copy.copy(controllers))
    while (url := walk.next()) is not None:
        ask = asking[url]
        if not ask.done():
            return False
        if ask.cancelled():
            return True  # `start` raises
        error = ask.exception()
        if error is None:
            error = _answer_error(ask.result())
            if error is None:  # a grant (the round takes it first): `start` registers with it
                return False
        if isinstance(error, RegistrationRefused) or not isinstance(error, MOVES_ON_FROM):
            return True  # a 409 ends the round; a failure `start` does not move on from ends the start (raised)
        walk.failed(url, error)
    return False


def _answer_error(resp: httpx.Response, instance_id: str = "") -> httpx.HTTPStatusError | None:
    """What taking a registration's answer raises: RegistrationRefused for a 409 (`start`'s round ends), an
    HTTPStatusError for any other answer but a 2xx (`start` moves on, to the controller a standby's 503 names),
    None for a grant."""
    if resp.status_code == 409:
        return RegistrationRefused(f"registration of {instance_id!r} refused: {_detail(resp)}",
                                   request=resp.request, response=resp)
    try:
        resp.raise_for_status()
    except httpx.HTTPStatusError as e:
        return e
    return None


def _granted(ask: asyncio.Future) -> bool:
    """A registration's ask that ended in a 2xx answer (the controller registered us)."""
    return not ask.cancelled() and ask.exception() is None and ask.result().is_success


def _dropped(asks: Iterable[asyncio.Future]) -> None:
    """The asks of a round `start` is done with: those still out cancelled, the failures of the others read (no
    "exception never retrieved" at their collection)."""
    for ask in asks:
        if not ask.done():
            ask.cancel()
        elif not ask.cancelled():
            ask.exception()


def _client_error(error: BaseException) -> bool:
    """A controller answered 4xx: up, and refusing this proxy (a wrong token, a request it will not take); unlike a
    5xx or a standby's 503, it may be the active one, taking another process's acks for our member (`start`,
    `_register_from_cache`, §4.7). A standby checks the token before it answers 503, so a wrong token's 401 may
    come from one: refusing produce then errs on the safe side."""
    return isinstance(error, httpx.HTTPStatusError) and 400 <= error.response.status_code < 500


async def _backed_off(delay: float) -> float:
    """Wait `delay` before a controller is asked again; the next delay (doubling, at most 5 s)."""
    await asyncio.sleep(delay)
    return min(delay * 2, 5.0)
