"""Supervised background tasks: one that ends or dies on an unexpected exception is logged and restarted with
backoff, and its state shows in /healthz and in metrics.

Without this a dead view stream went unnoticed: heartbeats kept the lease alive while the view went stale, and
every move waiting for this proxy's ack timed out (issue #15).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a task that ran this long before dying starts again from the initial backoff


@dataclass(slots=True)
class TaskHealth:
    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict:
        return {"running": self.running, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    """Runs named coroutine factories forever; each one's failure restarts only that one."""

    def __init__(self, initial_backoff_s: float = INITIAL_BACKOFF_S, max_backoff_s: float = MAX_BACKOFF_S,
                 stable_after_s: float = STABLE_AFTER_S) -> None:
        self.initial_backoff_s, self.max_backoff_s = initial_backoff_s, max_backoff_s
        self.stable_after_s = stable_after_s
        self.tasks: dict[str, TaskHealth] = {}
        self._running: list[asyncio.Task] = []

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        health = self.tasks[name] = TaskHealth(name)
        self._running.append(asyncio.create_task(self._keep(factory, health), name=f"supervised-{name}"))

    async def _keep(self, factory: Callable[[], Awaitable[None]], health: TaskHealth) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.initial_backoff_s
        while True:
            started = loop.time()
            health.running = True
            try:
                await factory()
                health.last_error = "returned"  # background tasks are meant to run until cancelled
                log.error("background task %s ended; restarting in %.1f s", health.name, backoff)
            except asyncio.CancelledError:
                health.running = False
                raise
            except Exception as e:
                health.last_error = f"{type(e).__name__}: {e}"
                log.exception("background task %s died; restarting in %.1f s", health.name, backoff)
            health.running = False
            health.restarts += 1
            if loop.time() - started >= self.stable_after_s:
                backoff = self.initial_backoff_s
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def healthy(self) -> bool:
        """Every task is running (one waiting out its backoff is not)."""
        return all(t.running for t in self.tasks.values())

    def report(self) -> dict[str, dict]:
        return {name: t.to_dict() for name, t in self.tasks.items()}

    async def stop(self) -> None:
        for task in self._running:
            task.cancel()
        for task in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()
