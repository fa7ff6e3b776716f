"""Review rvans: secrets of the controller's database that reach `--check --diff` output (and so the rendered
service definitions, the log of an AWX job, and `ps`)."""

from __future__ import annotations

import secrets

import pytest
from ansible_harness import site_check

DB_PASSWORD = "pw" + secrets.token_hex(16)  # appears nowhere else: a search for it finds only leaks
API_TOKEN = "api-" + secrets.token_hex(12)


@pytest.mark.ansible
def test_controller_db_url_password_is_not_shown_by_check_diff(tmp_path):
    """A PostgreSQL URL with its password (validate.yml redacts it in its own message, so it is expected) is put on
    the controller's command line: the rendered program/unit file shows it in --diff."""
    out = site_check(tmp_path, "localhost,controller", {
        "fedkafka_api_token": API_TOKEN,
        "fedkafka_controller_db_url": f"postgresql+psycopg://fedkafka:{DB_PASSWORD}@127.0.0.1/fedkafka"})
    assert API_TOKEN not in out
    assert DB_PASSWORD not in out, [line for line in out.splitlines() if DB_PASSWORD in line][:3]


@pytest.mark.ansible
def test_controller_env_secret_is_not_shown_by_check_diff(tmp_path):
    """The role's only way to give libpq a password without the URL is fedkafka_controller_env (PGPASSWORD): it is
    rendered into the service definition and shown by --diff too."""
    out = site_check(tmp_path, "localhost,controller", {
        "fedkafka_api_token": API_TOKEN,
        "fedkafka_controller_db_url": "postgresql+psycopg://fedkafka@127.0.0.1/fedkafka",
        "fedkafka_controller_env": {"PGPASSWORD": DB_PASSWORD}})
    assert DB_PASSWORD not in out, [line for line in out.splitlines() if DB_PASSWORD in line][:3]
