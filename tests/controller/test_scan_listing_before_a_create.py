"""A scan whose listing of a cluster predates a topic creation (`put_topic` ran between the scan's listing and its read
of the database) finds the new physical and shadow topics missing from that listing and asks Kafka for them: Kafka
answers TOPIC_ALREADY_EXISTS (nothing created, `ensure_topic` False). Nothing was re-created, so nothing is logged as
re-created (seen with real brokers: "re-created physical topic __fedkafka-shadow-<topic> on c1" right after a
`fedkafka topic create`, an operator reading it as a lost topic). A topic really missing is still created and logged.

They drive the controller with the fake Kafka of tests/controller/conftest.py."""

from __future__ import annotations

import dataclasses
import logging

from fedkafka.view.model import shadow_topic


def _controller_with_a_stale_listing(make_api, recording_kafka_class):
    class ListedBeforeTheCreate(recording_kafka_class):
        """The scans' listings leave out `unlisted`: what a listing taken before their creation shows."""

        def __init__(self):
            super().__init__()
            self.unlisted: set[tuple[str, str]] = set()

        def scan(self, cluster, bootstrap):
            scan = super().scan(cluster, bootstrap)
            return dataclasses.replace(scan, topics={t: n for t, n in scan.topics.items()
                                                     if (cluster, t) not in self.unlisted})

    kafka = ListedBeforeTheCreate()
    api = make_api(kafka=kafka)
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    return api, kafka


def test_a_scan_listing_taken_before_a_create_does_not_log_its_topics_re_created(
        make_api, recording_kafka_class, caplog):
    api, kafka = _controller_with_a_stale_listing(make_api, recording_kafka_class)
    created = dict(kafka.created)
    kafka.unlisted = {("c1", "t"), ("c2", "t"), ("c1", shadow_topic("t"))}
    version = api.controller.view.version
    with caplog.at_level(logging.INFO, logger="fedkafka.controller.service"):
        api.controller.scan_once()
    assert kafka.created == created  # Kafka held them all along, as many partitions
    assert not [r.getMessage() for r in caplog.records if "re-created" in r.getMessage()]
    assert api.controller.view.version == version  # and the scan's compose found nothing new


def test_a_topic_really_missing_is_created_again_and_logged(make_api, recording_kafka_class, caplog):
    api, kafka = _controller_with_a_stale_listing(make_api, recording_kafka_class)
    del kafka.created[("c1", shadow_topic("t"))]  # gone (a shadow topic holds no data: not lost)
    with caplog.at_level(logging.INFO, logger="fedkafka.controller.service"):
        api.controller.scan_once()
    assert kafka.created[("c1", shadow_topic("t"))] == 2
    assert [r.getMessage() for r in caplog.records if "re-created" in r.getMessage()] == \
        [f"re-created physical topic {shadow_topic('t')} on c1"]
