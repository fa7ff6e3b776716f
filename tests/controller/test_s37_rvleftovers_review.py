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


@pytest.mark.xfail(strict=True, reason="finding 1: the name service lets OSError out of its --token-file read (a "
                                       "traceback at start), where the controller, CLI and proxy say 'cannot read'")
def test_the_name_service_says_it_cannot_read_its_token_file(tmp_path, monkeypatch):
    token_file = tmp_path / "routing-token"
    token_file.write_text(f"{SECRET}\n")
    _unreadable(monkeypatch, token_file)
    with pytest.raises(typer.BadParameter) as refused:  # what the command prints as a usage error, exit 2
        nameservice._read_token(token_file)
    assert "Permission denied" in str(refused.value) and SECRET not in str(refused.value)


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


@pytest.mark.xfail(strict=True, reason="finding 2: --db-file goes through the token reader: a database URL with a "
                                       "blank (--db takes it) is refused as 'a token is one word of printable ASCII'")
@pytest.mark.parametrize("url", DB_URLS)
def test_db_file_takes_the_url_db_takes(tmp_path, url):
    db_file = tmp_path / "db-url"
    db_file.write_text(f"{url}\n")
    db_file.chmod(0o600)
    assert admin._database_url(None, db_file) == url


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


@pytest.mark.xfail(strict=True, reason="finding 3: the roles' argument specs, defaults comments and OPERATIONS "
                                       "'Controller tokens and HTTPS' still say '16+ characters' only")
def test_every_description_of_a_token_variable_says_the_one_word_rule():
    stale = [where for where, description in _spec_descriptions() if "printable ASCII" not in description]
    operations = " ".join((ROOT / "docs/OPERATIONS.md").read_text().split())
    paragraph = operations.split("With Ansible, set `fedkafka_controller_service_token`", 1)[1][:400]
    if "printable ASCII" not in paragraph:
        stale.append("docs/OPERATIONS.md: With Ansible, set `fedkafka_controller_service_token` (16+ characters ...")
    assert not stale, stale
