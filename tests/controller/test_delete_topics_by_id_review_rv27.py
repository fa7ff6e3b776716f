"""Review rv27: DeleteTopics v6+ deletes only the topic of the id the client names (commit 50389e5) — except when
the entry names the topic by name too. Kafka refuses such an entry (ControllerApis.deleteTopics: INVALID_REQUEST,
"You may not specify both topic name and topic id."); the proxy drops the id and deletes by name, so a stale id
deletes the topic created again under the name. Driven with the fake Kafka of tests/controller/conftest.py."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from controller.test_delete_topics_by_id import _create_topic, _delete_by_id


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

    entry = _delete_by_id(api, api.controller.view, old_id, name="t")
    topic = api.get("/v1/topics/t")
    assert topic.status_code == 200 and topic.json()["topic_id"] == new_id, (
        f"topic t of id {new_id} was deleted by an entry naming id {old_id}: {entry}")
    assert entry.error_code == ErrorCode.invalid_request, entry
