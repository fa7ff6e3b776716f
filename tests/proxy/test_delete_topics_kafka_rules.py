"""DeleteTopics entries Kafka refuses before deleting anything (ControllerApis.deleteTopics, Kafka 4.0): neither a
name nor an id, a name given twice, an id given twice, a topic given by name and by id, and a name the principal may
not describe. Each is answered per entry, the others of the request go on. The handler as a pure function."""

from __future__ import annotations

import dataclasses
import uuid

from kio.schema.errors import ErrorCode

from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import ControllerAnswer, Plan
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from proxy.test_admin_handlers import TIMEOUT, req
from proxy.test_handlers import ctx

ZERO = uuid.UUID(int=0)
DELETED_U = ControllerAnswer(200, {"deleted": "u", "view_version": 5})


def _v6(*entries: tuple[str | None, uuid.UUID]):
    return req(20, 6, {"topics": [{"name": n, "topic_id": i} for n, i in entries], "timeout": TIMEOUT})


def _paths(reply) -> list[str]:
    return [call.request.path for call in reply.calls] if isinstance(reply, Plan) else []


def _answer(reply, *controller_answers: ControllerAnswer) -> list[tuple]:
    response = reply.finish(list(controller_answers)) if isinstance(reply, Plan) else reply
    return [(r.name, getattr(r, "topic_id", None), r.error_code, getattr(r, "error_message", None))
            for r in response.responses]  # v0-4 answer neither the id nor a message


def test_an_entry_with_neither_a_name_nor_an_id_is_an_invalid_request_the_others_go_on():
    reply = topic_admin.handle(ctx(), None, _v6((None, ZERO), ("u", ZERO)))
    assert _paths(reply) == ["/v1/admin/topics/u"]
    assert _answer(reply, DELETED_U) == [
        (None, ZERO, ErrorCode.invalid_request, "Neither topic name nor id were specified."),
        ("u", ZERO, ErrorCode.none, None)]


def test_an_entry_naming_a_topic_and_an_id_is_an_invalid_request_the_others_go_on():
    c = ctx()
    t_id = uuid.UUID(hex=c.view.topics["t"].topic_id)
    reply = topic_admin.handle(c, None, _v6(("t", t_id), ("u", ZERO)))
    assert _paths(reply) == ["/v1/admin/topics/u"]  # t is not deleted, even with its own id
    assert _answer(reply, DELETED_U) == [
        ("t", t_id, ErrorCode.invalid_request, "You may not specify both topic name and topic id."),
        ("u", ZERO, ErrorCode.none, None)]


def test_a_name_given_twice_is_answered_once_and_not_deleted():
    for request in (_v6(("t", ZERO), ("u", ZERO), ("t", ZERO)),
                    req(20, 4, {"topic_names": ["t", "u", "t"], "timeout": TIMEOUT})):
        reply = topic_admin.handle(ctx(), None, request)
        assert _paths(reply) == ["/v1/admin/topics/u"]
        assert [(name, code) for name, _, code, _ in _answer(reply, DELETED_U)] == [
            ("t", ErrorCode.invalid_request), ("u", ErrorCode.none)]


def test_an_id_given_twice_is_answered_once_and_not_deleted():
    c = ctx()
    t_id = uuid.UUID(hex=c.view.topics["t"].topic_id)
    reply = topic_admin.handle(c, None, _v6((None, t_id), (None, t_id)))
    assert _paths(reply) == []
    assert _answer(reply) == [(None, t_id, ErrorCode.invalid_request, "Duplicate topic id.")]


def test_a_topic_given_by_name_and_by_its_id_is_not_deleted_and_answered_once_with_both():
    c = ctx()
    t_id = uuid.UUID(hex=c.view.topics["t"].topic_id)
    reply = topic_admin.handle(c, None, _v6((None, t_id), ("u", ZERO), ("t", ZERO)))
    assert _paths(reply) == ["/v1/admin/topics/u"]
    assert _answer(reply, DELETED_U) == [
        ("u", ZERO, ErrorCode.none, None),
        ("t", t_id, ErrorCode.invalid_request, "The provided topic name maps to an ID that was already supplied.")]


def test_deleting_a_topic_by_name_needs_describe_on_it_too():
    """Kafka deletes a topic given by name only if the principal may DESCRIBE and DELETE it (DELETE implies
    DESCRIBE unless DESCRIBE is denied); by id, DELETE alone."""
    who = "User:mallory"
    allow_delete, deny_describe = (Operation.DELETE, Permission.ALLOW), (Operation.DESCRIBE, Permission.DENY)
    bindings = tuple(AclBinding(ResourceType.TOPIC, "t", PatternType.LITERAL, who, "*", op, permission)
                     for op, permission in (allow_delete, deny_describe))
    c = dataclasses.replace(ctx(), authorizer=Authorizer(bindings), session=Session(principal=who))
    t_id = uuid.UUID(hex=c.view.topics["t"].topic_id)
    by_name = topic_admin.handle(c, None, _v6(("t", ZERO)))
    assert _paths(by_name) == []
    assert _answer(by_name) == [("t", ZERO, ErrorCode.topic_authorization_failed, None)]
    assert _paths(topic_admin.handle(c, None, _v6((None, t_id)))) == [f"/v1/admin/topics/t?topic_id={t_id.hex}"]
