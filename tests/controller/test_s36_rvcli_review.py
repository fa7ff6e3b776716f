"""Reviewer rvcli on s36-cli (8f4fd7d): the CLI's error naming each controller asked and what it said
(fedkafka/controller/client.py `_reason`, docs/DESIGN.md §3.6: "never a header or a body of the request, so never
the token")."""

from __future__ import annotations

import pytest

from controller.test_s36_cli_names_each_controller_unit import http_controller  # noqa: F401 (a fixture)
from fedkafka.controller.client import AdminClient, AdminError

SECRET = "s36-rvcli-secret-0123456789abcdef"


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_token_the_http_library_refuses_is_not_printed(http_controller, method):  # noqa: F811
    """A token file of two lines (the token, then a note): the client sends `Bearer <line 1>\\n<line 2>`, which h11
    refuses before any byte leaves ("Illegal header value b'Bearer ...'"); the CLI's error quotes it whole."""
    url = http_controller(200, {}, [])
    with AdminClient(url, f"{SECRET}\nissued for the CI runner") as api, \
            pytest.raises(AdminError) as failed:
        api.request(method, "/v1/clusters/k1" if method == "PUT" else "/v1/clusters",
                    {"bootstrap": "h:1"} if method == "PUT" else None)
    assert SECRET not in str(failed.value), str(failed.value)
