"""Long-running services: `fedkafka proxy`, `fedkafka nameservice` (owned by the proxy work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
