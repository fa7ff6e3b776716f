"""DeleteTopics v6+ naming a topic by id (docs/DESIGN.md §5.8): a proxy's request and the controller's admin route
together delete only the topic of that id, never another topic that has its name now. Driven with the fake Kafka
of tests/controller/conftest.py (no broker)."""

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


def _delete_by_id(api, view, topic_id: str, name: str | None = None):
    """A client's DeleteTopics v6 entry naming `topic_id` (and `name`, if given), handled by a proxy serving `view`;
    its calls are sent to the controller as the proxy sends them. The response's only entry (the proxy's own
    answer when it sent nothing)."""
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


def test_delete_topics_by_the_id_of_a_deleted_topic_leaves_the_topic_created_again_under_its_name(make_api):
    """Topic t (id X) is deleted and created again under the name (id Y) through one proxy. Another proxy still
    serves the view naming t with id X (views reach proxies one by one) when a client's DeleteTopics v6 names topic
    id X. Expected: only the topic of id X may be deleted; it is gone, so the new t (id Y) stays and the client is
    answered UNKNOWN_TOPIC_ID, as Kafka answers a deletion by the id of a topic that no longer exists."""
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    old_id = _create_topic(api, "t")
    stale = api.controller.view  # what the lagging proxy serves
    api.delete("/v1/admin/topics/t").raise_for_status()
    new_id = _create_topic(api, "t")
    assert new_id != old_id

    entry = _delete_by_id(api, stale, old_id)
    topic = api.get("/v1/topics/t")
    assert topic.status_code == 200 and topic.json()["topic_id"] == new_id, topic.text
    assert entry.error_code == ErrorCode.unknown_topic_id, entry


def test_delete_topics_by_the_current_id_deletes_the_topic(make_api):
    """A client's DeleteTopics v6 names the id topic t has now. Expected: t is deleted and the client's entry
    carries no error and t's name."""
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    topic_id = _create_topic(api, "t")

    entry = _delete_by_id(api, api.controller.view, topic_id)
    assert entry.error_code == ErrorCode.none and entry.name == "t", entry
    assert api.get("/v1/topics/t").status_code == 404
