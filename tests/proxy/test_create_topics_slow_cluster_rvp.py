"""Review (rvp): a CreateTopics v5+ answer now waits, after the controller created the topic, for a Metadata and a
DescribeConfigs of the physical topic; those calls carry no timeout of their own, so the core's default applies
(REQUEST_TIMEOUT_S, 40 s), longer than the client's whole request timeout (30 s here, and the Java AdminClient's
request.timeout.ms default). A cluster slow to answer the proxy holds the answer of a topic already created past the
client's timeout: the client gives up and retries, and its retry is answered TOPIC_ALREADY_EXISTS (AdminClient's
createTopics fails with TopicExistsException for a topic it created)."""

from __future__ import annotations

from fedkafka.proxy.core.upstream import REQUEST_TIMEOUT_S
from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import Plan
from proxy.test_admin_handlers import TIMEOUT, created
from proxy.test_create_topics_answer_unit import Live, _created_view, _request
from proxy.test_handlers import ctx


def test_the_physical_describe_after_a_creation_waits_no_longer_than_the_client():
    client_timeout_s = TIMEOUT.total_seconds()
    reply = topic_admin.handle(ctx(live=Live(_created_view())), None, _request()).finish(
        [created("a", 3, {"retention.ms": "1000"})])
    # a Plan: the creation is answered only once the physical topic's cluster answers (before: answered at once)
    waits = [call.timeout_s or REQUEST_TIMEOUT_S for call in reply.calls] if isinstance(reply, Plan) else []
    assert all(wait < client_timeout_s for wait in waits), (
        f"after the controller created the topic the answer may wait {max(waits, default=0)} s for the cluster, "
        f"past the client's {client_timeout_s} s request timeout")
