"""s37: every token file is read by one reader, `controllers.read_token` (its rule `token_problem`); each caller
says a refusal in its own words: the controller (`fedkafka controller`, `_read_tokens`), the CLI (`locate`), the
proxy (`fedkafka proxy --controller`, `_view_source`) and the name service (`fedkafka nameservice`). Each refuses a
file whose token is not one word of printable ASCII, naming the file and never the token, and takes a token with a
line break at its end."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from fedkafka.cli import nameservice, services
from fedkafka.cli.admin import _read_tokens
from fedkafka.controller.client import AdminError, locate

SECRET = "s37-token-secret-0123456789abcdef"


def _controller(path: Path) -> str:
    return _read_tokens(path, None).operator


def _cli(path: Path) -> str:
    return locate("http://c1", path)[1]


def _proxy(path: Path) -> str:
    token = services._view_source("http://c1", path, None, None)
    assert token is not None
    return token


def _nameservice(path: Path) -> str:
    return nameservice._read_token(path)


READERS = {"controller": _controller, "cli": _cli, "proxy": _proxy, "nameservice": _nameservice}
# how each says a refusal: the controller and the proxy on stderr (exit 2), the CLI and the name service in the error
REFUSALS = (typer.Exit, AdminError, typer.BadParameter)


def _refusal(read, path: Path, capsys) -> str:
    with pytest.raises(REFUSALS) as refused:
        read(path)
    return f"{refused.value} {capsys.readouterr().err}"


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_takes_the_token_without_its_line_break(tmp_path, reader):
    token_file = tmp_path / "api-token"
    token_file.write_text(f"{SECRET}\n")
    assert READERS[reader](token_file) == SECRET


@pytest.mark.parametrize("content", [f"{SECRET}\nissued for CI\n", f"{SECRET} note", "\n"])
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_a_token_the_rule_refuses_naming_the_file(tmp_path, capsys, reader, content):
    token_file = tmp_path / "api-token"
    token_file.write_text(content)
    said = _refusal(READERS[reader], token_file, capsys)
    assert str(token_file) in said and SECRET not in said, said
    assert ("is empty" if not content.strip() else "one word of printable ASCII") in said, said


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_a_file_that_is_not_utf8_as_it_refuses_any_other_character(tmp_path, capsys, reader):
    """A token file in Latin-1 (`café`): before, `read_text` raised UnicodeDecodeError out of every reader (a
    traceback, or a proxy's and a name service's crash at start) instead of the rule's one line naming the file."""
    token_file = tmp_path / "api-token"
    token_file.write_bytes(b"caf\xe9-" + SECRET.encode() + b"\n")
    said = _refusal(READERS[reader], token_file, capsys)
    assert str(token_file) in said and "printable ASCII" in said and SECRET not in said, said
