"""The Kafka admin API's topic writes as the proxies forward them (`/v1/admin/topics...`): controller.topic_admin
does the work and describes the answers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fedkafka.controller.service import Controller
from fedkafka.controller.topic_admin import ConfigBody, CreateBody, PartitionsBody, TopicAdmin


def router(controller: Controller, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])
    admin = TopicAdmin(controller)

    @router.post("/v1/admin/topics")
    def create_topic(body: CreateBody):
        return admin.create(body.name, body.partitions, body.config, body.validate_only)

    @router.post("/v1/admin/topics/{name}/partitions")
    def create_partitions(name: str, body: PartitionsBody):
        return admin.add_partitions(name, body.count, body.validate_only)

    @router.post("/v1/admin/topics/{name}/config")
    def alter_config(name: str, body: ConfigBody):
        return admin.alter_config(name, body.ops, body.replace, body.validate_only)

    @router.delete("/v1/admin/topics/{name}")
    def delete_topic(name: str, topic_id: str | None = None):
        """`?topic_id=<uuid>`: delete only if the topic's current id is that one (DeleteTopics by id)."""
        return admin.delete(name, topic_id)

    return router
