"""Review s37-rvleftovers of s37-leftovers (one token-file reader, `controllers.read_token`).

1. The name service reads its --token-file through `read_token` but catches only the refusal: a file it cannot read
   (mode 0600 owned by another user, an I/O error) raises OSError out of `fedkafka nameservice` at start, a traceback,
   where the controller, the CLI and the proxy say `cannot read --token-file: ...` (exit 2 / AdminError).
2. `fedkafka controller --db-file` reads the database URL through the token reader (`admin._database_url` ->
   `_read_token(db_file, "--db-file")`, since 025d9114): a URL with a blank (an SQLite path with a space, a
   PostgreSQL `options` value) is refused as "a token is one word of printable ASCII", though `--db` takes the same
   URL and SQLAlchemy parses it; the docstring says "the first line of --db-file".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy.engine import make_url

from fedkafka import local
from fedkafka.cli import admin, nameservice

SECRET = "s37-rv-token-secret-0123456789abcdef"


def _unreadable(monkeypatch, path: Path) -> None:
    """`path` exists but cannot be read (the tests run as root, so a chmod would not do)."""
    read_bytes = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)


def test_the_name_service_says_it_cannot_read_its_token_file(tmp_path, monkeypatch):
    token_file = tmp_path / "routing-token"
    token_file.write_text(f"{SECRET}\n")
    _unreadable(monkeypatch, token_file)
    with pytest.raises(typer.BadParameter) as refused:  # what the command prints as a usage error, exit 2
        nameservice._read_token(token_file)
    assert "Permission denied" in str(refused.value) and SECRET not in str(refused.value)


@pytest.mark.parametrize("bad", ["unreadable", "two words"])
def test_the_local_federation_says_what_is_wrong_with_its_controller_token_file(tmp_path, monkeypatch, bad):
    """`local.controller_api` (`local up`, `local demo`): a token file it cannot read or that the rule refuses is the
    command's one-line error (a RuntimeError, which they print), not a traceback."""
    token_file = tmp_path / "api-token"
    token_file.write_text(f"{SECRET}\n" if bad == "unreadable" else f"{SECRET} note\n")
    if bad == "unreadable":
        _unreadable(monkeypatch, token_file)
    # nothing listens on 127.0.0.1:9: the health probe finds no leader and the first controller is taken
    controller = {"url": "http://127.0.0.1:9", "token_file": str(token_file)}
    with pytest.raises(RuntimeError) as failed:
        local.controller_api(local.LocalState(tmp_path, services={"controller": controller}))
    said = str(failed.value)
    assert str(token_file) in said and SECRET not in said, said
    assert ("Permission denied" if bad == "unreadable" else "one word of printable ASCII") in said, said


def test_the_controller_says_it_cannot_read_its_token_file(tmp_path, monkeypatch, capsys):
    """The controller's words for the same file (the name service's should be alike): passes on the branch."""
    token_file = tmp_path / "api-token"
    token_file.write_text(f"{SECRET}\n")
    _unreadable(monkeypatch, token_file)
    with pytest.raises(typer.Exit) as failed:
        admin._read_token(token_file)
    assert failed.value.exit_code == 2
    assert "cannot read --token-file" in capsys.readouterr().err


DB_URLS = ["sqlite:////srv/fed kafka/controller.db",
           "postgresql+psycopg://fedkafka:pw@db.example/fedkafka?options=-c search_path=fedkafka"]


@pytest.mark.parametrize("url", DB_URLS)
def test_sqlalchemy_and_db_take_a_database_url_with_a_blank(url):
    """The URLs below are valid: SQLAlchemy parses them and `--db` passes them as they are."""
    assert make_url(url).drivername in ("sqlite", "postgresql+psycopg")
    assert admin._database_url(url, None) == url


@pytest.mark.parametrize("url", DB_URLS)
def test_db_file_takes_the_url_db_takes(tmp_path, url):
    db_file = tmp_path / "db-url"
    db_file.write_text(f"{url}\n")
    db_file.chmod(0o600)
    assert admin._database_url(None, db_file) == url



def test_db_file_takes_its_first_line_only(tmp_path):
    """The docstring's rule: the first line, stripped; what follows (a note) is not the URL's."""
    db_file = tmp_path / "db-url"
    db_file.write_text(f"  {DB_URLS[1]}  \nissued for the CI database\n")
    assert admin._database_url(None, db_file) == DB_URLS[1]


@pytest.mark.parametrize("content", ["", "\n", "   \nsqlite:////srv/controller.db\n"])
def test_db_file_without_a_url_on_its_first_line_is_refused_naming_the_file(tmp_path, capsys, content):
    db_file = tmp_path / "db-url"
    db_file.write_text(content)
    with pytest.raises(typer.Exit) as failed:
        admin._database_url(None, db_file)
    assert failed.value.exit_code == 2
    said = capsys.readouterr().err
    assert f"--db-file {db_file}" in said and "database URL" in said, said

# 3. The roles now refuse a token that is not one word of printable ASCII, and OPERATIONS' variable table says so;
# the roles' argument specs (what `ansible-doc`/the role docs show), the defaults' comments and OPERATIONS'
# "Controller tokens and HTTPS" still describe each token as "16+ characters" only.
ROOT = Path(__file__).resolve().parents[2]
TOKEN_VARIABLES = ("fedkafka_api_token", "fedkafka_controller_service_token", "fedkafka_controller_routing_token")


def _spec_descriptions() -> list[tuple[str, str]]:
    import yaml

    said = []
    for spec in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        for entry in (yaml.safe_load(spec.read_text()).get("argument_specs") or {}).values():
            for name, option in (entry.get("options") or {}).items():
                if name in TOKEN_VARIABLES:
                    said.append((f"{spec.parent.parent.name}: {name}", " ".join(str(option["description"]).split())))
    return said


def test_every_description_of_a_token_variable_says_the_one_word_rule():
    stale = [where for where, description in _spec_descriptions() if "printable ASCII" not in description]
    operations = " ".join((ROOT / "docs/OPERATIONS.md").read_text().split())
    paragraph = operations.split("With Ansible, set `fedkafka_controller_service_token`", 1)[1][:400]
    if "printable ASCII" not in paragraph:
        stale.append("docs/OPERATIONS.md: With Ansible, set `fedkafka_controller_service_token` (16+ characters ...")
    assert not stale, stale
