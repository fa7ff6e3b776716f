"""s36 (review s36-rvcli finding 3, modules): a token that is not one word of printable ASCII (a vars file's block
scalar, a two-line token file read whole) is refused before any request, naming no token; the rule is the
controller's (fedkafka/controllers.py `token_problem`; module_utils keeps a copy, as it cannot import fedkafka).
Before, http.client refused the header and its ValueError, quoting `Bearer <token>` (escaped, so no_log's masking
missed it), became the task's error. Stand-ins over real HTTP, no controller."""

from __future__ import annotations

import pytest
from ansible_harness import ApiError, FedkafkaApi
from ansible_harness import run_module as run
from test_modules_ha import http_controller  # noqa: F401 (a fixture)

from fedkafka.controllers import token_problem

SECRET = "s36-modules-token-secret-0123456789"
TWO_LINES = f"{SECRET}\nissued for the CI runner"


@pytest.mark.parametrize("token", ["", "one-word-token", TWO_LINES, f"{SECRET} note", f"{SECRET}\t", "caf\u00e9",
                                   "a\x7fb", "Ab0-_.~!$%&'()*+,;=:@/?#[]"])
def test_the_modules_take_a_token_by_the_controller_s_rule(token):
    from ansible.module_utils.fedkafka_api import _token_problem  # importable once ansible_harness set the path

    assert _token_problem(token) == token_problem(token)


def test_a_module_given_a_two_line_token_fails_naming_no_token(http_controller):  # noqa: F811
    url = http_controller(200, {}, {"view_version": 1})
    failed, result = run("fedkafka_info", {"controller_url": [url], "token": TWO_LINES})
    assert failed and "line break" in result["msg"] and SECRET not in result["msg"], result


def test_a_header_http_client_refuses_is_not_quoted(http_controller):  # noqa: F811
    """Past the check (a token changed after it): http.client's refusal, quoting the header, never reaches the
    error; the request is said not sent, not maybe carried out."""
    url = http_controller(200, {}, {"view_version": 1})
    api = FedkafkaApi([url], "s36-modules-token-ok", timeout=5)
    api.token = TWO_LINES
    with pytest.raises(ApiError) as failed:
        api.request("PUT", "/v1/clusters/k1", {"bootstrap": "h:1"})
    said = str(failed.value)
    assert f"not sent to {url}" in said and "may have been carried out" not in said and SECRET not in said, said
