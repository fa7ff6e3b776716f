"""Review rv27: DeleteTopics v6+ deletes only the topic of the id the client names (commit 50389e5) — except when
the entry names the topic by name too. Kafka refuses such an entry (ControllerApis.deleteTopics: INVALID_REQUEST,
"You may not specify both topic name and topic id."); the proxy drops the id and deletes by name, so a stale id
deletes the topic created again under the name. Driven with the fake Kafka of tests/controller/conftest.py."""

from __future__ import annotations

import datetime
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta
from proxy.test_handlers import ctx

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import ControllerAnswer, Plan


def _delete(api, view, name: str | None, topic_id: str):
    """A client's DeleteTopics v6 entry (name, topic id), handled by a proxy serving `view`, its calls sent to the
    controller as the proxy sends them; the response's only entry."""
    timeout = i32Timedelta.parse(datetime.timedelta(seconds=30))
    request = build(request_type(20, 6), {"topics": [{"name": name, "topic_id": uuid.UUID(hex=topic_id)}],
                                          "timeout": timeout})
    plan = topic_admin.handle(ctx(v=view), None, request)
    if not isinstance(plan, Plan):  # answered by the proxy itself, nothing sent to the controller
        (entry,) = plan.responses
        return entry
    answers = []
    for call in plan.calls:
        reply = api.request(call.request.method, call.request.path, json=call.request.body)
        answers.append(ControllerAnswer(reply.status_code, reply.json()))
    (entry,) = plan.finish(answers).responses
    return entry


def _create_topic(api, name: str) -> str:
    api.post("/v1/admin/topics", json={"name": name, "partitions": 1}).raise_for_status()
    return api.get(f"/v1/topics/{name}").json()["topic_id"]


def test_delete_topics_naming_a_topic_and_the_id_of_a_deleted_one_deletes_nothing(make_api):
    """t (id X) is deleted and created again (id Y). A client's DeleteTopics v6 entry names t and topic id X.
    Expected, as Kafka: INVALID_REQUEST for the entry, nothing deleted (the id says the client means X, which is
    gone). Found: the proxy ignores the id and deletes t by name: the new t (id Y) is deleted."""
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    old_id = _create_topic(api, "t")
    api.delete("/v1/admin/topics/t").raise_for_status()
    new_id = _create_topic(api, "t")
    assert new_id != old_id

    entry = _delete(api, api.controller.view, "t", old_id)
    topic = api.get("/v1/topics/t")
    assert topic.status_code == 200 and topic.json()["topic_id"] == new_id, (
        f"topic t of id {new_id} was deleted by an entry naming id {old_id}: {entry}")
    assert entry.error_code == ErrorCode.invalid_request, entry
