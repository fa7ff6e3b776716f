"""Review s37-rvleftovers of s37-leftovers: validate.yml ("imported first by every playbook: a missing or bad
variable fails here, naming the variable") applies the one-word rule to fedkafka_api_token only. A service or
routing token with a blank or a line break inside passes it; site.yml then runs its broker plays and stops at the
controller role's token check (roles/fedkafka_common/tasks/token.yml), hosts later. Runs validate.yml alone on the
local inventory: it touches localhost only (asserts, add_host)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
NOT_ONE_WORD = "0123456789abcdef and a note"


def _validate(variables: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([PLAYBOOK, "playbooks/validate.yml", "-e", json.dumps(variables)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_validate_refuses_an_api_token_that_is_not_one_word():
    """The control: the rule validate.yml has (passes on the branch)."""
    proc = _validate({"fedkafka_api_token": NOT_ONE_WORD})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0 and "fedkafka_api_token must be set: one word" in out, out[-3000:]
    assert re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M) == ["localhost"]


@pytest.mark.parametrize("variable", ["fedkafka_controller_service_token", "fedkafka_controller_routing_token"])
def test_validate_refuses_a_service_or_routing_token_that_is_not_one_word(variable):
    proc = _validate({variable: NOT_ONE_WORD})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out[-3000:]
    assert variable in out, out[-3000:]
