"""A CreateAcls entry the config database cannot store (a name, principal or host over its column's 256
characters, or holding a NUL, which PostgreSQL refuses in any text) is refused on its own as INVALID_REQUEST,
as Kafka refuses an invalid entry: it is not posted, so the batch's valid entries are still created (the
controller answers a whole batch 422 for one such entry)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.controller.api.common import stored_length
from fedkafka.controller.models import AclRow
from fedkafka.proxy.handlers import acl_admin
from fedkafka.proxy.plan import ControllerAnswer
from fedkafka.security.acl import NAME_MAX
from security.test_admin_acl_unit import OPS, _creations


def test_an_entry_the_database_cannot_store_is_refused_alone_and_the_others_are_created():
    request = _creations((2, "t", 3), (2, "t\x00", 3), (2, "x" * (NAME_MAX + 1), 3), (2, "y" * NAME_MAX, 3))
    plan = acl_admin.handle(OPS, None, request)
    (call,) = plan.calls
    assert [b["name"] for b in call.request.body["acls"]] == ["t", "y" * NAME_MAX]
    answer = plan.finish([ControllerAnswer(200, {"created": [], "view_version": 7})])
    assert [r.error_code for r in answer.results] == [ErrorCode.none, ErrorCode.invalid_request,
                                                      ErrorCode.invalid_request, ErrorCode.none]
    assert "NUL" in answer.results[1].error_message and str(NAME_MAX) in answer.results[2].error_message


def test_the_bound_is_the_columns():
    assert NAME_MAX == stored_length(AclRow.name) == stored_length(AclRow.principal) == stored_length(AclRow.host)
