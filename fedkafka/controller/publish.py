"""Hands new views to long-polling subscribers: serialized once, woken all at once on the event loop."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from collections import OrderedDict

from fedkafka.view.delta import view_delta
from fedkafka.view.model import View

HISTORY = 64  # views kept for deltas; older subscribers get the full view


class Publisher:
    def __init__(self, view: View):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._history: OrderedDict[int, View] = OrderedDict()
        self._deltas: dict[tuple[int, int], bytes] = {}
        self.subscribers: collections.Counter[int] = collections.Counter()  # open streams by version last sent
        self._set(view)

    @property
    def view(self) -> View:
        return self._current[0]

    @property
    def body(self) -> bytes:
        """The current view as JSON bytes (built once per version, shared by every subscriber)."""
        return self._current[1]

    def current(self) -> tuple[View, bytes]:
        """The current view and its JSON bytes, of one version: `publish` runs on another thread, and reading
        `view` then `body` could pair a new version with the old body (a stream would then skip that view)."""
        return self._current

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def publish(self, view: View) -> bool:
        """Make `view` current if it is newer (views are monotonic); wake the waiters. Thread-safe."""
        with self._lock:
            if view.version <= self.view.version:
                return False
            self._set(view)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)
        return True

    def delta_body(self, after: int) -> bytes | None:
        """The delta from `after` to the current view (None when `after` left the history), computed once
        per (after, current) pair however many subscribers ask."""
        view = self.view
        key = (after, view.version)
        cached = self._deltas.get(key)
        if cached is None:
            old = self._history.get(after)
            if old is None:
                return None
            cached = json.dumps({"delta": view_delta(old, view)}, separators=(",", ":")).encode()
            self._deltas = {k: v for k, v in self._deltas.items() if k[1] == view.version}
            self._deltas[key] = cached
        return cached

    async def wait_newer(self, after: int, timeout: float) -> bool:
        """True as soon as the current version is above `after`; False after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.view.version <= after:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._event is None:
                return False
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                return self.view.version > after
        return True

    def follow(self, before: int | None, now: int | None) -> None:
        """A stream moved from version `before` to `now` (None: opened, closed), for metrics."""
        if before is not None:
            self.subscribers[before] -= 1
            if self.subscribers[before] <= 0:
                del self.subscribers[before]
        if now is not None:
            self.subscribers[now] += 1

    def _set(self, view: View) -> None:
        body = json.dumps(view.to_dict(), separators=(",", ":")).encode()
        self._current = (view, body)  # one assignment: a reader sees the old pair or the new one, never a mix
        self._history[view.version] = view
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)

    def _wake(self) -> None:
        old, self._event = self._event, asyncio.Event()
        if old is not None:
            old.set()
