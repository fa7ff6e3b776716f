"""Controller admin calls go out a few at a time per proxy process (controller_calls.ADMIN_CALLS_AT_ONCE), the rest
waiting their turn in order; one still waiting when its timeout passes is answered REQUEST_TIMED_OUT without ever
reaching the controller. Before, dispatch started one task per call, all at once: a CreateTopics of n topics was n
concurrent HTTP requests on the client the lease renewal shares (test_admin_fanout_starves_lease.py)."""

from __future__ import annotations

import asyncio

from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.proxy.core.controller_calls import ADMIN_CALLS_AT_ONCE, ControllerCalls
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import Call, ControllerAnswer, ControllerApi, ControllerRequest, UpstreamError, admin_outcome
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import ProxyInfo, ProxyRole, View
from proxy.test_admin_handlers import TIMEOUT, req

TOPICS = 40  # more than ADMIN_CALLS_AT_ONCE


class HeldLink:
    """A controller link whose admin calls wait for `release`, counting how many are out at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.paths: list[str] = []
        self.in_flight = self.most_in_flight = 0

    async def admin(self, method: str, path: str, body, timeout_s: float):
        self.paths.append(f"{method} {path} {body.get('name', '') if isinstance(body, dict) else ''}".strip())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        name = body["name"]
        return 201, {"topic": {"name": name, "topic_id": "0" * 31 + "1", "partitions": 1, "config": {}}}


async def _until(condition, turns: int = 1000) -> None:
    """Let the loop run until `condition()` holds (bounded in loop turns, not in time)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def _create_topics_frame(n: int) -> bytes:
    topics = [{"name": f"t{i:03d}", "num_partitions": 1, "replication_factor": -1, "assignments": [],
               "configs": []} for i in range(n)]
    request = req(19, 7, {"topics": topics, "timeout": TIMEOUT, "validate_only": False})
    return codec.encode_request(request, 5, "test")[4:]


async def _wide_create_topics() -> tuple[HeldLink, int, int, list]:
    link = HeldLink()
    state = ProxyState(view=View(version=1), me=ProxyInfo(7, "p7", 9092, ProxyRole.BOTH))
    dispatcher = Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=UpstreamPool(),
                            modules=[topic_admin], controller=link)
    answer = await dispatcher.start(_create_topics_frame(TOPICS), 0)
    await _until(lambda: len(link.paths) >= ADMIN_CALLS_AT_ONCE)
    for _ in range(100):  # more turns of the loop: nothing more may start while the first ones are held
        await asyncio.sleep(0)
    sent_while_held, waiting = len(link.paths), dispatcher._controller_calls.waiting
    link.release.set()
    _, body = codec.decode_response(codec.response_type(19, 7), (await answer)[4:])
    return link, sent_while_held, waiting, [(t.name, t.error_code) for t in body.topics]


def test_a_create_topics_of_many_topics_sends_a_few_controller_calls_at_a_time_and_answers_them_all():
    link, sent_while_held, waiting, answered = asyncio.run(_wide_create_topics())
    assert (sent_while_held, waiting) == (ADMIN_CALLS_AT_ONCE, TOPICS - ADMIN_CALLS_AT_ONCE)
    assert link.most_in_flight == ADMIN_CALLS_AT_ONCE
    assert link.paths == [f"POST /v1/admin/topics t{i:03d}" for i in range(TOPICS)]  # in the request's order
    assert answered == [(f"t{i:03d}", ErrorCode.none) for i in range(TOPICS)]


def _call(name: str, timeout_s: float) -> Call:
    return Call(ControllerApi(), ControllerRequest("POST", "/v1/admin/topics", {"name": name}), timeout_s=timeout_s)


async def _queued_past_its_timeout():
    link = HeldLink()
    state = ProxyState(view=View(version=1), me=ProxyInfo(7, "p7", 9092, ProxyRole.BOTH))
    calls = ControllerCalls(link, state, limit=1)
    loop = asyncio.get_running_loop()
    first = calls.submit(_call("held", 60.0), loop)
    queued = calls.submit(_call("late", 0.05), loop)  # its whole timeout passes while "held" holds the one turn
    late = await queued
    link.release.set()
    return link, late, await first


def test_a_call_still_waiting_for_its_turn_when_its_timeout_passes_is_timed_out_and_never_sent():
    link, late, first = asyncio.run(_queued_past_its_timeout())
    assert isinstance(late, UpstreamError) and "not sent" in late.reason
    assert admin_outcome(late)[0] == ErrorCode.request_timed_out  # what the Kafka client is answered: retriable
    assert link.paths == ["POST /v1/admin/topics held"]  # "late" never reached the controller
    assert isinstance(first, ControllerAnswer) and first.ok


async def _a_cancelled_request():
    link = HeldLink()
    state = ProxyState(view=View(version=1), me=ProxyInfo(7, "p7", 9092, ProxyRole.BOTH))
    calls = ControllerCalls(link, state, limit=1)
    loop = asyncio.get_running_loop()
    first = calls.submit(_call("held", 60.0), loop)
    gone = calls.submit(_call("gone", 60.0), loop)
    after = calls.submit(_call("after", 60.0), loop)
    await _until(lambda: len(link.paths) == 1)
    gone.cancel()  # the client's request is gone (its connection closed)
    link.release.set()
    await first
    await after
    return link


def test_a_waiting_call_whose_request_is_gone_is_never_sent():
    link = asyncio.run(_a_cancelled_request())
    assert link.paths == ["POST /v1/admin/topics held", "POST /v1/admin/topics after"]
