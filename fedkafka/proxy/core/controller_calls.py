"""The controller admin calls of one proxy process (`plan.ControllerApi`: CreateTopics, DeleteTopics, AlterConfigs,
...), at most ADMIN_CALLS_AT_ONCE at a time, the others waiting their turn in order (docs/DESIGN.md §5.8).

A Kafka admin request becomes one call per entry (a CreateTopics of n topics: n calls), and the proxy's link to the
controller is the one its lease renewal goes over (view_source.ControllerViewSource). Started all at once, a request
of more than a hundred topics held every connection of the link's pool, the heartbeat waited for one until its pool
timeout, and past the fence the proxy stopped producing. Here a waiting call is a future and a timer, not a task
(a request may name ~100,000 topics); one still waiting when its timeout passes is answered then, without ever being
sent: an UpstreamError, which the handlers answer REQUEST_TIMED_OUT (retriable: nothing was changed). A call that
starts is given the time it has left. Its turn ends with the controller's answer: waiting for this proxy to serve the
view the answer names holds no turn.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol

from fedkafka.proxy.plan import Call, ControllerAnswer, UpstreamError

ADMIN_CALLS_AT_ONCE = 16  # per proxy process; the controller link keeps connections of its own for the lease
CONTROLLER_TIMEOUT_S = 60.0  # a topic creation waits for every physical cluster's own timeout
VIEW_WAIT_S = 10.0  # how long a controller answer waits for this proxy to serve the view it made


class ControllerLink(Protocol):
    """The proxy's HTTP link to its controller (`view_source.ControllerViewSource`)."""

    async def admin(self, method: str, path: str, body: Any, timeout_s: float) -> tuple[int, Any]: ...


class ControllerCall(asyncio.Future):
    """A controller call's result: a ControllerAnswer or an UpstreamError (an exception only for a bug). Not a plain
    Future: dispatch's one-call fast path (for a broker call, which it times out itself) tells them apart by type()."""

    __slots__ = ()


class ControllerCalls:
    """Controller admin calls, ADMIN_CALLS_AT_ONCE (`limit`) at a time, first come first served."""

    def __init__(self, link: ControllerLink, state, limit: int = ADMIN_CALLS_AT_ONCE):
        self.link = link
        self.state = state  # has .view: a call's answer waits until this proxy serves the view it names
        self.limit = limit
        self.running = 0  # calls sent and not answered yet
        self._waiting: collections.deque[tuple[Call, ControllerCall, float, asyncio.TimerHandle]] = \
            collections.deque()
        self._tasks: set[asyncio.Task] = set()  # the running calls (a reference, so none is collected midway)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, call: Call, loop: asyncio.AbstractEventLoop) -> ControllerCall:
        """The call's future, answered when the controller answers (or when its timeout passes first)."""
        result = ControllerCall(loop=loop)
        timeout_s = call.timeout_s or CONTROLLER_TIMEOUT_S
        deadline = loop.time() + timeout_s
        timer = loop.call_at(deadline, self._give_up, result, timeout_s)
        self._waiting.append((call, result, deadline, timer))
        self._start_next(loop)
        return result

    def _start_next(self, loop: asyncio.AbstractEventLoop) -> None:
        while self.running < self.limit and self._waiting:
            call, result, deadline, timer = self._waiting.popleft()
            timer.cancel()
            left = deadline - loop.time()
            if result.done() or left <= 0:  # timed out waiting (or the client's request is gone): never sent
                self._give_up(result, call.timeout_s or CONTROLLER_TIMEOUT_S)
                continue
            self.running += 1
            task = loop.create_task(self._run(call, result, left))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _give_up(self, result: ControllerCall, timeout_s: float) -> None:
        """A call still waiting for its turn when its timeout passed: answered now, never sent."""
        _answer(result, UpstreamError("controller", f"not sent: {timeout_s:.0f} s passed waiting for one of this "
                                                    f"proxy's {self.limit} controller calls at a time"))

    async def _run(self, call: Call, result: ControllerCall, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        req = call.request
        try:
            status, body = await self.link.admin(req.method, req.path, req.body, timeout_s)
        except asyncio.CancelledError:  # the loop is shutting down: no other call starts
            self.running -= 1
            result.cancel()
            raise
        except (OSError, ConnectionError, TimeoutError) as e:
            self._turn_ends(loop)
            _answer(result, UpstreamError("controller", f"controller unreachable: {e or type(e).__name__}"))
            return
        except Exception as e:  # a bug: the request fails as a handler failure would (its connection closes)
            self._turn_ends(loop)
            if not result.done():
                result.set_exception(e)
            return
        self._turn_ends(loop)
        wanted = body.get("view_version") if 200 <= status < 300 and isinstance(body, dict) else None
        if isinstance(wanted, int):
            deadline = loop.time() + VIEW_WAIT_S
            while self.state.view.version < wanted and loop.time() < deadline:
                await asyncio.sleep(0.01)
        _answer(result, ControllerAnswer(status, body))

    def _turn_ends(self, loop: asyncio.AbstractEventLoop) -> None:
        self.running -= 1
        self._start_next(loop)


def _answer(result: ControllerCall, value: ControllerAnswer | UpstreamError) -> None:
    if not result.done():  # cancelled: the client's request is gone
        result.set_result(value)
