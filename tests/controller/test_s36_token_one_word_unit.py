"""s36 (review s36-rvcli finding 3): a controller token is one word of printable ASCII (`token_problem`, the rule
the controller takes its own token files by). A token file holding a line break inside (`strip` trims only the ends)
is refused where it is read, naming the file, never the token; before, the CLI sent it and h11 refused the header,
quoting the whole `Bearer ...` value in the error. A request the HTTP library refused to send is said not sent, not
"may have been carried out"."""

from __future__ import annotations

import pytest
import typer

from controller.test_s36_cli_names_each_controller_unit import http_controller  # noqa: F401 (a fixture)
from fedkafka.cli.admin import _read_tokens
from fedkafka.controller.client import AdminClient, AdminError, locate
from fedkafka.controller.scopes import Tokens
from fedkafka.controllers import token_problem

SECRET = "s36-token-secret-0123456789abcdef"
TWO_LINES = f"{SECRET}\nissued for the CI runner"


@pytest.mark.parametrize("token", [TWO_LINES, f"{SECRET} and a note", f"{SECRET}\t", "caf\u00e9-token", "a\x00b", ""])
def test_a_token_that_is_not_one_word_of_printable_ascii_is_refused_without_quoting_it(token):
    problem = token_problem(token)
    assert problem is not None and SECRET not in problem


def test_a_url_safe_token_is_taken():
    assert token_problem("Ab0-_.~!$%&'()*+,;=:@/?#[]") is None  # printable ASCII, no blank


def test_the_cli_refuses_a_token_file_with_a_line_break_naming_the_file(tmp_path):
    token_file = tmp_path / "api-token"
    token_file.write_text(TWO_LINES + "\n")
    with pytest.raises(AdminError) as refused:
        locate("http://c1", token_file)
    said = str(refused.value)
    assert str(token_file) in said and "line break" in said and SECRET not in said, said


def test_the_cli_refuses_fedkafka_token_with_a_line_break(monkeypatch):
    monkeypatch.setenv("FEDKAFKA_TOKEN", TWO_LINES)
    with pytest.raises(AdminError) as refused:
        locate("http://c1")
    assert "$FEDKAFKA_TOKEN" in str(refused.value) and SECRET not in str(refused.value)


def test_the_controller_refuses_such_a_token_file_at_start(tmp_path, capsys):
    token_file = tmp_path / "api-token"
    token_file.write_text(TWO_LINES + "\n")
    with pytest.raises(typer.Exit):
        _read_tokens(token_file, None)
    err = capsys.readouterr().err
    assert str(token_file) in err and SECRET not in err, err
    with pytest.raises(ValueError, match="the service token holds a line break") as refused:
        Tokens("op-token-1", TWO_LINES)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_request_the_http_library_refused_is_said_not_sent(http_controller, method):  # noqa: F811
    """The AdminClient given such a token by a caller other than `locate`: h11 refuses the header before any byte
    leaves. Before, a PUT was said to "may have been carried out" (and the error quoted the token)."""
    url = http_controller(200, {}, [])
    with AdminClient(url, TWO_LINES) as api, pytest.raises(AdminError) as failed:
        api.request(method, "/v1/clusters/k1" if method == "PUT" else "/v1/clusters",
                    {"bootstrap": "h:1"} if method == "PUT" else None)
    said = str(failed.value)
    assert f"not sent to {url}" in said and "may have been carried out" not in said and SECRET not in said, said
