"""The Kafka admin API's writes on logical topics, as the proxies ask for them (`/v1/admin/...`).

A Kafka client's CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs and IncrementalAlterConfigs reach a
proxy, which forwards each topic's part here: only the controller changes the federation. Each route answers
the view version the change produced (the proxy answers its client once it serves that view) or an error with
the Kafka error name the proxy answers with (`kafka_error`). Topics are created and grown the way
`fedkafka topic create` does it (`Controller.put_topic`: Kafka first, database second, docs/DESIGN.md §7.1).

Configs: the stored config of a logical topic is what every physical topic of its chains carries, and what a
new segment's physical topic is created with (workflows read it from the database). A change is applied to
every cluster holding a segment of the topic first, then stored; a cluster refusing it refuses the change.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from fedkafka.controller import deletions
from fedkafka.controller.errors import Invalid, NotFound, Unavailable
from fedkafka.controller.kafka_admin import KafkaRefused, KafkaUnavailable
from fedkafka.controller.models import ClusterRow, SegmentRow, TopicRow
from fedkafka.controller.service import MAX_PARTITIONS, Controller, check_topic
from fedkafka.view.model import ClusterState

DEFAULT_PARTITIONS = 1  # CreateTopics with num_partitions -1: Kafka's own num.partitions default
# IncrementalAlterConfigs operations (Kafka's AlterConfigOp.OpType ids)
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
# Kafka's topic configs of type LIST (LogConfig's ConfigDef), the only ones APPEND and SUBTRACT apply to, with the
# static default a topic that never set one starts from (KafkaConfigSchema.getDefault)
TOPIC_LIST_DEFAULTS = {"cleanup.policy": "delete", "leader.replication.throttled.replicas": "",
                       "follower.replication.throttled.replicas": ""}


class CreateBody(BaseModel):
    name: str
    partitions: int = -1
    config: dict[str, str] = Field(default_factory=dict)
    validate_only: bool = False


class PartitionsBody(BaseModel):
    count: int
    validate_only: bool = False


class ConfigOp(BaseModel):
    name: str
    op: int = SET
    value: str | None = None


class ConfigBody(BaseModel):
    ops: list[ConfigOp]
    replace: bool = False  # AlterConfigs (not incremental): configs not named go back to their defaults
    validate_only: bool = False


class TopicAdmin:
    def __init__(self, controller: Controller):
        self.ctl = controller

    def create(self, name: str, partitions: int, config: dict[str, str], validate_only: bool) -> dict[str, Any]:
        partitions = DEFAULT_PARTITIONS if partitions == -1 else partitions
        if validate_only:
            return self._validate_create(name, partitions, config)
        topic, _, version = self.ctl.put_topic(name, partitions, "blocks", config, create_only=True)
        return self._done(topic, version)

    def _validate_create(self, name: str, partitions: int, config: dict[str, str]) -> dict[str, Any]:
        check_topic(name, partitions, "blocks", config)
        with self.ctl.session() as s:
            if s.get(TopicRow, name) is not None:
                raise Invalid(f"Topic '{name}' already exists.", status=409, kafka_error="TOPIC_ALREADY_EXISTS")
            deletions.refuse_pending(s, name)
            targets = [c for c in s.scalars(select(ClusterRow).order_by(ClusterRow.ordinal))
                       if c.state == ClusterState.ACTIVE and c.reachable]
        if not targets:
            raise Unavailable("no active, reachable cluster to create the topic on", kafka_error="REQUEST_TIMED_OUT")
        self.ctl.validate_new_partitions(name, partitions, "blocks")  # as the creation, a leftover refuses it
        if config:
            self._kafka(lambda: self.ctl.kafka.validate_new_topic(targets[0].id, targets[0].bootstrap, 1, config))
        return {"topic": {"name": name, "partitions": partitions, "config": config}, "validate_only": True}

    def add_partitions(self, name: str, count: int, validate_only: bool) -> dict[str, Any]:
        row = self._topic_row(name)
        if count < row["partitions"]:
            raise Invalid(f"Topic currently has {row['partitions']} partitions, which is higher than the requested "
                          f"{count}: logical partitions can only grow (fewer would re-hash keys and strand records)",
                          kafka_error="INVALID_PARTITIONS")
        if count == row["partitions"]:
            raise Invalid(f"Topic already has {count} partitions.", kafka_error="INVALID_PARTITIONS")
        if count > MAX_PARTITIONS:
            raise Invalid(f"partitions must be at most {MAX_PARTITIONS}, got {count}", kafka_error="INVALID_PARTITIONS")
        if validate_only:  # as the growth, a leftover physical topic on a new partition's cluster refuses it
            self.ctl.validate_new_partitions(name, count, row["placement"])
            return {"topic": {**row, "partitions": count}, "validate_only": True}
        topic, _, version = self.ctl.put_topic(name, count, row["placement"], row["config"])
        return self._done(topic, version)

    def alter_config(self, name: str, ops: list[ConfigOp], replace: bool, validate_only: bool) -> dict[str, Any]:
        row = self._topic_row(name)
        new = _apply_ops({} if replace else dict(row["config"]), ops)
        dropped = [k for k in row["config"] if k not in new]
        changed = {k: v for k, v in new.items() if row["config"].get(k) != v}
        holders = self._holders(name)
        if validate_only:  # one cluster judges names and values, nothing is changed
            cluster, bootstrap = holders[0]
            self._kafka(lambda: self.ctl.kafka.alter_topic_config(cluster, bootstrap, name, changed, dropped,
                                                                  validate_only=True))
            return {"topic": {**row, "config": new}, "validate_only": True}
        topic, _, version = self.ctl.put_topic(name, row["partitions"], row["placement"], new)
        return self._done(topic, version)

    def delete(self, name: str, topic_id: str | None = None) -> dict[str, Any]:
        """Delete the topic. `topic_id` is given when the client named the topic by id (DeleteTopics v6+): only
        the topic of that id is deleted, never one created again under the name since the proxy's view (a name
        with another id, or none, is UNKNOWN_TOPIC_ID, as Kafka answers an id it does not know)."""
        if topic_id is None:
            self._topic_row(name)
            version = self.ctl.delete_topic(name)
        else:
            version = self.ctl.delete_topic(name, topic_id=_topic_id_hex(topic_id))
        return {"deleted": name, "view_version": version}

    # -- helpers ------------------------------------------------------------------------------------
    def _topic_row(self, name: str) -> dict[str, Any]:
        with self.ctl.session() as s:
            row = s.get(TopicRow, name)
            if row is None:
                raise NotFound(f"This server does not host this topic: {name}",
                               kafka_error="UNKNOWN_TOPIC_OR_PARTITION")
            return {"name": row.name, "partitions": row.partitions, "placement": row.placement,
                    "config": json.loads(row.config_json)}

    def _holders(self, name: str) -> list[tuple[str, str]]:
        """(cluster, bootstrap) of every cluster holding a segment of the topic, registration order."""
        with self.ctl.session() as s:
            used = {c for (c,) in s.execute(select(SegmentRow.cluster).where(SegmentRow.topic == name).distinct())}
            return [(c.id, c.bootstrap) for c in s.scalars(select(ClusterRow).order_by(ClusterRow.ordinal))
                    if c.id in used]

    @staticmethod
    def _done(topic: dict[str, Any], version: int) -> dict[str, Any]:
        """`version`: the view holding the change (`Composed.version`), which the proxy waits for."""
        return {"topic": {k: topic[k] for k in ("name", "topic_id", "partitions", "config")},
                "view_version": version}

    @staticmethod
    def _kafka(action) -> None:
        try:
            action()
        except KafkaRefused as e:
            raise Invalid(str(e), kafka_error=e.code) from None
        except KafkaUnavailable as e:
            raise Unavailable(f"{e}; nothing was changed, retry when it is back",
                              kafka_error="REQUEST_TIMED_OUT") from None


def _topic_id_hex(topic_id: str) -> str:
    """A topic id as the database holds it (32 lowercase hex digits), whether given with or without dashes."""
    try:
        return uuid.UUID(topic_id).hex
    except ValueError:
        raise Invalid(f"topic_id {topic_id!r} is not a topic id (a UUID)", kafka_error="INVALID_REQUEST") from None


def _apply_ops(config: dict[str, str], ops: list[ConfigOp]) -> dict[str, str]:
    """The config after IncrementalAlterConfigs operations, as Kafka's controller computes it
    (ConfigurationControlManager.incrementalAlterConfigResource): APPEND and SUBTRACT only on LIST configs, from the
    topic's value or, never set, Kafka's static default for topic configs (not a cluster's broker default: a
    logical topic's config is one value on every cluster, docs/DESIGN.md §5.8)."""
    for op in ops:
        if not op.name:
            raise Invalid("a config name must not be empty", kafka_error="INVALID_CONFIG")
        if op.op == DELETE:
            config.pop(op.name, None)
            continue
        if op.value is None:  # the proxies refuse it first (ConfigAdminManager.preprocess)
            raise Invalid(f"Null value not supported for : {op.name}", kafka_error="INVALID_REQUEST")
        if op.op == SET:
            config[op.name] = op.value
        elif op.op in (APPEND, SUBTRACT):
            config[op.name] = _list_op(config.get(op.name), op)
        else:
            raise Invalid(f"config {op.name}: unknown operation {op.op}", kafka_error="INVALID_REQUEST")
    return config


def _list_op(current: str | None, op: ConfigOp) -> str:
    """The value of a LIST config after one APPEND (of the elements it lacks) or SUBTRACT."""
    if op.name not in TOPIC_LIST_DEFAULTS:
        raise Invalid(f"Can't {'APPEND' if op.op == APPEND else 'SUBTRACT'} to key {op.name} because its type is "
                      "not LIST.", kafka_error="INVALID_CONFIG")
    items = _list_items(TOPIC_LIST_DEFAULTS[op.name] if current is None else current)
    for value in _list_items(op.value or ""):
        if op.op == APPEND and value not in items:
            items.append(value)
        elif op.op == SUBTRACT and value in items:
            items.remove(value)
    return ",".join(items)


def _list_items(value: str) -> list[str]:
    """A LIST config's elements as Kafka parses them (ConfigDef: split on commas, whitespace around each
    trimmed), empty ones dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]
