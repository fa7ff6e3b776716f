"""The controller deletes a deleted topic's physical topics by their Kafka topic ids, never by name (docs/DESIGN.md
§5.8, "A stale deletion deletes nothing created since"): the id recorded with the deletion, or learned and stored by
a fenced write before deleting by it; a stale deletion, whenever it arrives, deletes nothing of a topic created
again under the name. Driven with the fake Kafka of tests/controller/conftest.py (no broker), whose topics get a
new id each time they are created."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fedkafka.controller.kafka_admin import KafkaUnavailable
from fedkafka.controller.leadership import Leadership
from fedkafka.controller.models import PendingDeletionRow
from fedkafka.view.model import shadow_topic

NAMES = (shadow_topic("t"), "t")  # the physical topics topic t leaves on c1: its shadow topic and its own


def _kafka_class(recording_kafka_class):
    """The fake Kafka with a pause: `meanwhile`, when set, runs once just before the first id lookup
    (`pause_in` "lookup"), just after it ("looked up") or just before the first deletion by id ("delete") of physical
    topic `pause_at` (what another controller does while this one is paused there); and deletions that time out
    while `deletes_time_out`."""

    class Kafka(recording_kafka_class):
        pause_at, pause_in = "t", "delete"
        meanwhile = None
        deletes_time_out = False

        def _paused(self, where: str, names) -> None:
            if where == self.pause_in and self.pause_at in names and self.meanwhile is not None:
                hook, self.meanwhile = self.meanwhile, None
                hook()

        def topic_ids(self, cluster, bootstrap, names):
            self._paused("lookup", names)
            ids = super().topic_ids(cluster, bootstrap, names)
            self._paused("looked up", names)
            return ids

        def delete_topic_by_id(self, cluster, bootstrap, name, topic_id):
            self._paused("delete", [name])
            if self.deletes_time_out:
                raise KafkaUnavailable(f"cluster {cluster} unavailable: timed out")
            return super().delete_topic_by_id(cluster, bootstrap, name, topic_id)

    return Kafka


def _federation(make_api, kafka):
    """A controller with cluster c1 and topic t (1 partition) on it, 3 records acked on its physical topic."""
    api = make_api(kafka=kafka)
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    api.controller.scan_once()  # c1 reachable
    kafka.ends[("c1", "t", 0)] = 3
    return api


def _created_again(api, kafka, records: int) -> None:
    """Controller `api` finishes the deletion of t (its scan), creates t again and `records` are acked on its new
    physical topic."""
    api.controller.scan_once()
    assert api.get("/v1/status").json()["pending_deletions"] == {}
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    kafka.ends[("c1", "t", 0)] = records


def _rows(api) -> dict[str, str | None]:
    """Pending deletions on c1: physical topic -> its recorded Kafka topic id."""
    with api.controller.session() as s:
        return {row.physical_topic: row.kafka_topic_id for row in s.scalars(select(PendingDeletionRow))}


def _deleted_while_c1_was_down(make_api, recording_kafka_class):
    """(kafka, stale, taken_over): controller A (`stale`) deleted t while c1 did not answer (its row records no id);
    controller B (`taken_over`) shares the database and the fake Kafka; c1 answers again."""
    kafka = _kafka_class(recording_kafka_class)()
    stale = _federation(make_api, kafka)
    taken_over = make_api(kafka=kafka)
    kafka.down = {"c1"}
    stale.delete("/v1/topics/t").raise_for_status()
    kafka.down = set()
    return kafka, stale, taken_over


def test_a_deletion_records_its_physical_topics_kafka_ids_and_deletes_by_them(make_api, recording_kafka_class):
    """t is deleted while c1 answers metadata but its deletions time out. Expected: the deletion's own transaction
    recorded each physical topic's Kafka id; the scan after deletes by exactly those ids, and the rows go."""
    kafka = _kafka_class(recording_kafka_class)()
    api = _federation(make_api, kafka)
    ids = {name: kafka.ids[("c1", name)] for name in NAMES}
    kafka.deletes_time_out = True
    api.delete("/v1/topics/t").raise_for_status()
    assert _rows(api) == ids

    kafka.deletes_time_out = False
    api.controller.scan_once()
    assert _rows(api) == {}
    assert sorted(kafka.deleted_ids)[-2:] == sorted(("c1", name, ids[name]) for name in NAMES)
    assert not any(("c1", name) in kafka.created for name in NAMES)


def test_an_id_unknown_at_the_deletion_is_stored_before_the_deletion_by_it(make_api, recording_kafka_class):
    """t is deleted while c1 is down: no id is known. c1 answers the next scan. Expected: each physical topic's id
    is learned and committed in its row before the deletion by it is sent; then the topics and rows are gone."""
    class Kafka(_kafka_class(recording_kafka_class)):
        stored_when_deleted: list[tuple[str, str | None]] = []

        def delete_topic_by_id(self, cluster, bootstrap, name, topic_id):
            self.stored_when_deleted.append((topic_id, _rows(api).get(name)))
            return super().delete_topic_by_id(cluster, bootstrap, name, topic_id)

    kafka = Kafka()
    api = _federation(make_api, kafka)
    ids = {name: kafka.ids[("c1", name)] for name in NAMES}
    kafka.down = {"c1"}
    api.delete("/v1/topics/t").raise_for_status()
    assert _rows(api) == {name: None for name in NAMES}

    kafka.down = set()
    api.controller.scan_once()
    assert sorted(kafka.stored_when_deleted) == sorted((ids[name], ids[name]) for name in NAMES)
    assert _rows(api) == {}
    assert not any(("c1", name) in kafka.created for name in NAMES)


def test_a_stale_deletion_by_a_recorded_id_leaves_the_topic_created_again_and_its_records(
        make_api, recording_kafka_class):
    """Controller A deletes t; its deletion of physical topic t (by the id it recorded) is held back while controller
    B, on A's database, finishes the deletion, creates t again and 2 records are acked on its new physical topic.
    Then A's request arrives. Expected: Kafka has no topic of the old id; the new physical topic t and its 2
    records stay."""
    kafka = _kafka_class(recording_kafka_class)()
    stale = _federation(make_api, kafka)
    taken_over = make_api(kafka=kafka)
    old_id = kafka.ids[("c1", "t")]
    kafka.meanwhile = lambda: _created_again(taken_over, kafka, records=2)
    stale.delete("/v1/topics/t").raise_for_status()

    assert kafka.meanwhile is None  # A was held back
    new_id = kafka.ids[("c1", "t")]
    assert new_id != old_id and ("c1", "t", old_id) in kafka.deleted_ids
    assert ("c1", "t") in kafka.created and kafka.ends[("c1", "t", 0)] == 2
    assert taken_over.get("/v1/topics/t").status_code == 200


def test_a_stale_attempt_learning_the_id_of_the_topic_created_again_stores_it_nowhere_and_deletes_nothing(
        make_api, recording_kafka_class):
    """t was deleted while c1 was down (no id recorded). Controller A's scan reads the row of physical topic t; its
    id lookup is held back while controller B finishes the deletion, creates t again and 2 records are acked. A's
    lookup then answers the NEW topic's id. Expected: A stores it in no row (the row it read is gone) and deletes
    nothing by it: the new physical topic t and its records stay."""
    kafka, stale, taken_over = _deleted_while_c1_was_down(make_api, recording_kafka_class)
    kafka.pause_in, kafka.meanwhile = "lookup", lambda: _created_again(taken_over, kafka, records=2)
    stale.controller.scan_once()

    assert kafka.meanwhile is None  # A was held back
    new_id = kafka.ids[("c1", "t")]
    assert not any(topic_id == new_id for _c, _n, topic_id in kafka.deleted_ids), kafka.deleted_ids
    assert ("c1", "t") in kafka.created and kafka.ends[("c1", "t", 0)] == 2
    assert _rows(stale) == {}
    assert taken_over.get("/v1/topics/t").status_code == 200


def test_an_id_a_stale_attempt_learned_is_not_stored_in_a_later_deletion_of_the_name(make_api, recording_kafka_class):
    """t was deleted while c1 was down. Controller A's scan learns the id of physical topic t and is held back before
    storing it, while controller B finishes that deletion, creates t again (2 records acked) and deletes it again
    while c1 does not answer B (its row records no id). Then A stores. Expected: A's id (of the first t, gone) goes
    in no row: the row of the second deletion learns its own id later, and the second t's physical topic is
    deleted, not left behind with its records."""
    kafka, stale, taken_over = _deleted_while_c1_was_down(make_api, recording_kafka_class)

    def deleted_twice() -> None:
        _created_again(taken_over, kafka, records=2)
        kafka.down = {"c1"}
        taken_over.controller.scan_once()  # c1 unreachable: the second deletion learns no id, attempts nothing
        taken_over.delete("/v1/topics/t").raise_for_status()
        kafka.down = set()

    kafka.pause_in, kafka.meanwhile = "looked up", deleted_twice
    stale.controller.scan_once()
    assert kafka.meanwhile is None  # A was held back
    assert _rows(stale)["t"] is None and ("c1", "t") in kafka.created

    stale.controller.scan_once()
    assert _rows(stale) == {} and ("c1", "t") not in kafka.created


def test_a_controller_that_lost_its_leader_row_learns_no_id_and_deletes_nothing(make_api, recording_kafka_class):
    """t was deleted while c1 was down (no id recorded); then another controller took the leader row over. The old
    controller's round (it has not noticed yet) reaches c1. Expected: it stores no id and deletes nothing; the
    active controller's round does."""
    kafka = _kafka_class(recording_kafka_class)()
    api = _federation(make_api, kafka)
    ctl = api.controller
    kafka.down = {"c1"}
    api.delete("/v1/topics/t").raise_for_status()
    kafka.down = set()
    old = Leadership(ctl.session, "http://a:1", lease_s=60)
    assert old.try_acquire()
    old.active, ctl.leadership = True, old
    assert Leadership(ctl.session, "http://a:1", lease_s=60, owns_url=True).try_acquire()  # the takeover

    ctl.deletions.retry({"c1": "c1:9092"})
    assert _rows(api) == {name: None for name in NAMES}
    assert kafka.deleted_ids == [] and all(("c1", name) in kafka.created for name in NAMES)

    ctl.leadership = None  # the active one (here: without leadership)
    ctl.deletions.retry({"c1": "c1:9092"})
    assert _rows(api) == {} and not any(("c1", name) in kafka.created for name in NAMES)


def test_a_controller_that_lost_its_leader_row_deletes_no_topic_and_records_no_id(make_api, recording_kafka_class):
    """Another controller took the leader row over; the old one (not aware yet) is asked to delete t. Expected: its
    deletion's transaction does not commit (503): t stays, no pending deletion is recorded, no physical topic goes."""
    kafka = _kafka_class(recording_kafka_class)()
    api = _federation(make_api, kafka)
    ctl = api.controller
    old = Leadership(ctl.session, "http://a:1", lease_s=60)
    assert old.try_acquire()
    old.active, ctl.leadership = True, old
    assert Leadership(ctl.session, "http://a:1", lease_s=60, owns_url=True).try_acquire()  # the takeover

    assert api.delete("/v1/topics/t").status_code == 503
    ctl.leadership = None
    assert api.get("/v1/topics/t").status_code == 200
    assert _rows(api) == {} and kafka.deleted_ids == [] and all(("c1", name) in kafka.created for name in NAMES)


def test_the_id_requests_try_every_bootstrap_broker_and_name_each_one_that_did_not_answer():
    """`_any_broker` (the deletions' Metadata and DeleteTopics) asks each bootstrap broker in turn: brokers that
    refuse the connection are named with the error, one left no time with "not asked"; KafkaUnavailable lists all."""
    from fedkafka.controller.topic_ids import _any_broker
    from fedkafka.kafka.cluster import free_port
    from fedkafka.security.upstream import PLAINTEXT

    closed = [free_port(), free_port()]
    bootstrap = ",".join(f"127.0.0.1:{port}" for port in closed)
    with pytest.raises(KafkaUnavailable) as refused:
        _any_broker(bootstrap, None, 10.0, PLAINTEXT.default)
    answers = str(refused.value).split("; ")
    assert [a.startswith(f"broker 127.0.0.1:{port}: ConnectionRefusedError: ") for a, port in
            zip(answers, closed, strict=True)] == [True, True], answers
    with pytest.raises(KafkaUnavailable) as late:
        _any_broker(bootstrap, None, 0.0, PLAINTEXT.default)
    assert str(late.value) == "; ".join(f"broker 127.0.0.1:{port}: not asked, no time left" for port in closed)
