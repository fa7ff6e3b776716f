"""A proxy without --authorization answers DescribeAcls SECURITY_DISABLED, as a Kafka broker without an authorizer
does, to an unmodified client. kafka-python raises it; confluent-kafka (librdkafka 2.x) drops DescribeAcls' top-level
error and returns no bindings, from a real broker as from the proxy, so it cannot tell. CreateAcls/DeleteAcls need a
controller: they are checked against the SASL_SSL federation in test_upstream_sasl_integration.py."""

from __future__ import annotations

import pytest
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import SecurityDisabledError
from proxy.support import ProxyProcess

from fedkafka.view.model import View

pytestmark = [pytest.mark.integration]

EVERY_ACL = ACLFilter(None, "*", ACLOperation.ANY, ACLPermissionType.ANY,
                      ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))


def test_describe_acls_on_a_proxy_without_authorization_is_security_disabled(tmp_path):
    # no Kafka needed: ApiVersions, Metadata and DescribeAcls are answered by the proxy itself
    with ProxyProcess(tmp_path, View(version=1)) as proxy:
        admin = KafkaAdminClient(bootstrap_servers=proxy.bootstrap, request_timeout_ms=20000)
        try:
            with pytest.raises(SecurityDisabledError, match="enforces no ACL"):
                admin.describe_acls(EVERY_ACL)
        finally:
            admin.close()
