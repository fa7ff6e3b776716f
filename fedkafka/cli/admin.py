"""Admin commands against the controller: cluster, topic, view, status, controller (owned by the controller work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
