"""The workflow tests' federation (`support.Federation`: a controller and proxies as subprocesses over the
session's Kafka clusters), stopped after each test whatever happened."""

from __future__ import annotations

import pytest

from .support import Federation


@pytest.fixture
def federation(tmp_path):
    fed = Federation(tmp_path)
    yield fed
    fed.stop()
