"""Review s32-rv7 of the upstream config reload (merge 5cf26c0: `UpstreamFile` loads the file itself at start, watches
the files a refused file names, stamps taken before reading). Each test FAILS on main (5cf26c0).

The new lenient read (`upstream_reload._locations`) and the stamps of the files it names run in `UpstreamFile._load`
BEFORE its `try`: whatever they raise is no longer "a file that cannot be loaded" (one WARNING, the settings before
kept) but an exception out of `check()` / `for_cluster()` (every recheck: a new upstream connection fails) and out of
`UpstreamFile.__init__` (a `--workers` worker started again while the file is so cannot start: before 5cf26c0 it
started with its parent's settings, as the merge's own docstring promises when the file cannot be loaded).
Two such files: a `*.location` holding a NUL character (`os.stat` raises ValueError, `file_stamp` catches OSError
only; `load_upstream_config` itself refuses it cleanly: "is not a readable file"), and a document nested deeper than
the JSON parser recurses (RecursionError, not a ValueError)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fedkafka.security.upstream import load_upstream_config
from fedkafka.security.upstream_reload import UpstreamFile
from security.test_upstream_reload_unit import NEW, OLD, Clock, _rewrite, _write


def _nul_location(path: Path) -> None:
    """A rotation gone wrong: a location with a NUL character (a templating bug, a binary value pasted)."""
    _write(path, NEW, **{"ssl.ca.location": "/etc/fedkafka/tls/ca\u0000.pem"})


def _nested_too_deep(path: Path) -> None:
    """A file whose JSON nests deeper than the parser recurses (damaged, or written by a runaway generator)."""
    path.write_text('{"sasl.password": ' + "[" * 100_000 + "]" * 100_000 + "}")
    path.chmod(0o600)


def _refused_at_recheck(tmp_path: Path, caplog, damage) -> None:
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    _rewrite(path, damage)
    clock.now += source.recheck_s
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        security = source.for_cluster("c1")  # main: raises out of the new connection's settings
    assert security.password == OLD  # the settings loaded before keep serving
    assert source.failures == 1 and source.reloads == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and f"upstream config {path} not reloaded" in lines[0], lines
    assert OLD not in lines[0] and NEW not in lines[0]
    clock.now += source.recheck_s
    assert source.for_cluster("c1").password == OLD  # and the next recheck does not raise either


def test_rv7_a_rewritten_file_naming_a_location_with_a_nul_byte_is_refused_with_one_warning_not_raised(tmp_path,
                                                                                                     caplog):
    _refused_at_recheck(tmp_path, caplog, _nul_location)


def test_rv7_a_rewritten_file_nested_deeper_than_the_json_parser_is_refused_with_one_warning_not_raised(tmp_path,
                                                                                                      caplog):
    _refused_at_recheck(tmp_path, caplog, _nested_too_deep)


def test_rv7_a_worker_started_while_the_file_names_a_location_with_a_nul_byte_starts_with_the_parents_settings(
        tmp_path, caplog):
    """The parent loaded a good file at the proxy's start; the file was rotated badly since; the worker the parent
    starts again must start (with the parent's settings and the WARNING), not die at every restart."""
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    parents = load_upstream_config(path)
    _rewrite(path, _nul_location)
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        source = UpstreamFile(path, parents, clock=Clock())  # main: ValueError, the worker's ProxyServer fails
    assert source.for_cluster("c1").password == OLD
    assert source.failures == 1
    assert any("not reloaded (at start)" in r.getMessage() for r in caplog.records)
    assert json.loads(path.read_text())["sasl.password"] == NEW  # the premise: the file holds the new one


def test_rv7_a_password_not_in_utf8_leaves_none_of_its_bytes_in_the_warning(tmp_path, caplog):
    """[secret, low; older than 5cf26c0: `load_upstream_config`, which the CLI's start message shares] A password
    written in Latin-1 (an editor's encoding) makes the file not UTF-8: the WARNING quotes Python's
    UnicodeDecodeError, "can't decode byte 0xe4 in position 93", a byte of the password and where it is."""
    path = tmp_path / "upstream.json"
    _write(path, OLD)
    clock = Clock()
    source = UpstreamFile(path, load_upstream_config(path), clock=clock)
    secret = "Rot\u00e4ted-pw"

    def latin1(p: Path) -> None:
        p.write_bytes(json.dumps({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                  "sasl.username": "fedkafka", "sasl.password": secret},
                                 ensure_ascii=False).encode("latin-1"))
        p.chmod(0o600)
    _rewrite(path, latin1)
    clock.now += source.recheck_s
    with caplog.at_level(logging.WARNING, "fedkafka.security.upstream_reload"):
        assert source.for_cluster("c1").password == OLD
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "not reloaded" in lines[0], lines
    assert "0xe4" not in lines[0], lines[0]
