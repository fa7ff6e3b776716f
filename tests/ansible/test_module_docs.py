"""Each module's documentation, as ansible-doc renders it (doc fragment included), says what its
argument_spec takes: the same options, types, required flags, defaults, choices and aliases; and it has
EXAMPLES and RETURN."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible_harness import ROOT

MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))
BIN = Path(sys.executable).parent


class _Spec(BaseException):
    def __init__(self, spec: dict):
        super().__init__("argument_spec")
        self.spec = spec


def argument_spec(name: str) -> dict:
    """The argument_spec that module `name` hands to AnsibleModule (its main() stops right there)."""
    def capture(self, argument_spec, **_kwargs):
        raise _Spec(argument_spec)

    with mock.patch.object(basic.AnsibleModule, "__init__", capture):
        try:
            importlib.import_module(name).main()
        except _Spec as got:
            return got.spec
    raise AssertionError(f"{name}.main() built no AnsibleModule")


def rendered(name: str) -> dict:
    """What `ansible-doc --json` says of module `name` (it fails on a document it cannot parse)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    out = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", "--json", name], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout)[name]


def test_every_module_is_checked():
    assert {"fedkafka_cluster", "fedkafka_info", "fedkafka_scale_up", "fedkafka_topic", "kafka_broker_info"} <= set(
        MODULES)


@pytest.mark.ansible  # runs ansible-doc
@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name):
    page = rendered(name)
    assert page["examples"].strip() and page["return"], f"{name}: EXAMPLES and RETURN are part of its docs"
    spec, docs = argument_spec(name), page["doc"]["options"]
    assert sorted(docs) == sorted(spec), f"{name}: documented options differ from its argument_spec"
    for option, want in spec.items():
        doc = docs[option]
        assert doc.get("type", "str") == want.get("type", "str"), option
        assert bool(doc.get("required")) == bool(want.get("required")), option
        assert doc.get("default") == want.get("default"), option
        assert doc.get("choices") == want.get("choices"), option
        assert sorted(doc.get("aliases") or []) == sorted(want.get("aliases") or []), option
        assert doc.get("description"), f"{name}: option {option} has no description"
