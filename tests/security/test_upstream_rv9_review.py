"""Review s32-rv9 of merge 3a4cd20 (an upstream config not in UTF-8 refused without quoting a byte of it). Each test
FAILS on main (d002ab5).

[secrets, availability] A file in UTF-8 whose JSON names a password with a lone surrogate (`"\\ud800"`: valid JSON
syntax, a templating or copy-paste accident) is not refused: `load_upstream_config` takes a password that cannot be
encoded as UTF-8, so it can never be sent to a broker. A SIGHUP or recheck then REPLACES working settings with it
(the module's promise: "a reload that fails changes nothing"), and every new upstream login raises a
UnicodeEncodeError (not an AuthenticationFailed, so not the once-per-cluster ERROR line) whose message quotes the
password's character and its position in `\\0user\\0password` (the user's and the password's lengths): what the
merge's "not UTF-8 text" refusal exists to keep out of the logs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from kio.schema.errors import ErrorCode

from fedkafka.security.upstream import UpstreamConfigError, load_upstream_config, sasl_exchange
from fedkafka.security.upstream_reload import UpstreamFile
from security.test_upstream_reload_unit import OLD, Clock, _rewrite, _write

NOT_ENCODABLE = "Pw-7f3a\ud800c"  # json.dumps writes it as the escape "\ud800": the file itself is UTF-8 (ASCII)


def test_rv9_a_password_that_cannot_be_encoded_as_utf8_is_refused_at_load(tmp_path):
    path = tmp_path / "upstream.json"
    _write(path, NOT_ENCODABLE)
    assert path.read_bytes().decode("utf-8")  # the file is UTF-8 text
    with pytest.raises(UpstreamConfigError) as refused:  # main: loaded
        load_upstream_config(path)
    assert "Pw-7f3a" not in str(refused.value)


def test_rv9_a_reload_to_a_password_no_login_can_send_keeps_the_settings_before(tmp_path, caplog):
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    _rewrite(path, lambda p: _write(p, NOT_ENCODABLE))
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        reloaded = source.reload()  # SIGHUP
    security = source.for_cluster("c1")
    if security.password != OLD:  # main: taken, and the next login cannot even start
        exchange = sasl_exchange(security)
        next(exchange)  # the handshake; then the PLAIN token, made of the password
        with pytest.raises(UnicodeEncodeError) as login:
            exchange.send(SimpleNamespace(error_code=ErrorCode.none, mechanisms=["PLAIN"]))
        pytest.fail(f"reloaded={reloaded}: new upstream logins fail with {login.value!r}")
    assert not reloaded and source.failures == 1
