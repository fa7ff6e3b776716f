"""Reviewer rvcli on s36-cli (8f4fd7d): the modules' errors "never the token" (module_utils/fedkafka_api.py
`_what_they_said`, docs/DESIGN.md §3.6: the same words as the CLI's, "never a header or a body of the request")."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.parameters import remove_values
from ansible_harness import ApiError, FedkafkaApi
from test_modules_ha import http_controller  # noqa: F401 (a fixture)

SECRET = "s36-rvcli-module-secret-0123456789"


def test_a_token_urllib_refuses_is_not_in_the_task_s_error(http_controller):  # noqa: F811
    """A token with a line break (a vars file's block scalar, a two-line token file read whole): http.client
    refuses the header before sending ("Invalid header value b'Bearer ...'"); the module's msg, masked as
    `fail_json` masks a no_log option's value, still holds the token."""
    token = f"{SECRET}\nissued for the CI runner"
    url = http_controller(200, {}, {"view_version": 1})
    with pytest.raises(ApiError) as failed:
        FedkafkaApi([url], token, timeout=5).status()
    masked = remove_values(str(failed.value), {token})  # what AnsibleModule.fail_json does to msg
    assert SECRET not in masked, masked
