"""DescribeConfigs of BROKER and BROKER_LOGGER resources: the proxy is the broker the client sees, so it answers them
as Kafka's broker answers its own (ConfigHelper.describeConfigs): its own node id or (BROKER) the empty name for the
cluster-wide defaults; another broker's id or a name that is not an integer INVALID_REQUEST; BROKER_LOGGER its
loggers and their levels (kafka-configs --describe --entity-type broker-loggers), never with an empty name. Both need
DESCRIBE_CONFIGS on the cluster."""

from __future__ import annotations

import dataclasses
import logging

from kio.schema.errors import ErrorCode

from fedkafka.proxy.handlers import describe_configs
from fedkafka.security.acl import Authorizer
from fedkafka.security.session import Session
from proxy.test_admin_handlers import req
from proxy.test_handlers import ctx

BROKER, BROKER_LOGGER = 4, 8
STATIC_BROKER_CONFIG, DYNAMIC_BROKER_LOGGER_CONFIG = 4, 6  # DescribeConfigsResponse.ConfigSource


def describe(*resources: tuple[int, str, list[str] | None], version: int = 4, c=None, synonyms: bool = False):
    """The answer of proxy 7 (`proxy.test_handlers.ctx`), answered without an upstream call."""
    answer = describe_configs.handle(c or ctx(), None, req(32, version, {"resources": [
        {"resource_type": t, "resource_name": n, "configuration_keys": k} for t, n, k in resources],
        "include_synonyms": synonyms, "include_documentation": False}))
    return answer.results


def test_another_brokers_id_or_a_name_that_is_no_id_is_an_invalid_request_as_kafka():
    other, word = describe((BROKER, "8", None), (BROKER, "eight", None))
    assert (other.error_code, other.error_message) == (
        ErrorCode.invalid_request, "Unexpected broker id, expected 7 or empty string, but received 8")
    assert (word.error_code, word.error_message) == (
        ErrorCode.invalid_request, "Broker id must be an integer, but it is: eight")
    assert other.configs == word.configs == ()


def test_its_own_id_answers_the_broker_configs_the_proxy_has():
    (own,) = describe((BROKER, "7", None), synonyms=True)
    assert own.error_code == ErrorCode.none
    configs = {c.name: c for c in own.configs}
    assert configs["node.id"].value == configs["broker.id"].value == "7"
    assert configs["node.id"].read_only and configs["node.id"].config_source == STATIC_BROKER_CONFIG
    node_synonyms = [(s.name, s.value, s.source) for s in configs["node.id"].synonyms]
    assert node_synonyms == [("node.id", "7", STATIC_BROKER_CONFIG)]
    (asked,) = describe((BROKER, "7", ["broker.id"]))
    assert [c.name for c in asked.configs] == ["broker.id"] and asked.configs[0].synonyms == ()
    (defaults,) = describe((BROKER, "", None))  # the cluster-wide dynamic defaults: the proxy has none
    assert (defaults.error_code, defaults.configs) == (ErrorCode.none, ())


def test_broker_loggers_of_its_own_id_are_its_loggers_with_their_levels():
    logging.getLogger("fedkafka.proxy").setLevel(logging.DEBUG)
    try:
        own, other, empty = describe((BROKER_LOGGER, "7", None), (BROKER_LOGGER, "8", None), (BROKER_LOGGER, "", None))
    finally:
        logging.getLogger("fedkafka.proxy").setLevel(logging.NOTSET)
    assert own.error_code == ErrorCode.none
    levels = {c.name: c.value for c in own.configs}
    assert levels["fedkafka.proxy"] == "DEBUG" and "root" in levels
    assert {c.config_source for c in own.configs} == {DYNAMIC_BROKER_LOGGER_CONFIG}
    assert (other.error_code, other.error_message) == (
        ErrorCode.invalid_request, "Unexpected broker id, expected 7 but received 8")
    assert (empty.error_code, empty.error_message) == (ErrorCode.invalid_request, "Broker id must not be empty")


def test_broker_and_logger_resources_need_describe_configs_on_the_cluster():
    denied = dataclasses.replace(ctx(), authorizer=Authorizer(()), session=Session(principal="User:nobody"))
    answers = describe((BROKER, "7", None), (BROKER_LOGGER, "7", None), c=denied)
    assert [(a.error_code, a.configs) for a in answers] == [(ErrorCode.cluster_authorization_failed, ())] * 2
