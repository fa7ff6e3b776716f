"""Observability test support."""

from __future__ import annotations

TOKEN = "secret-token"  # the test controller's API token
