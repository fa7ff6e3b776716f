"""The proxy's mutable state: current view, its own identity, its lease (fencing: docs/DESIGN.md §4.3)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fedkafka.view.model import ProxyInfo, View


@dataclass(slots=True)
class ProxyState:
    view: View
    me: ProxyInfo
    # monotonic; until when this proxy may produce: the fence the controller granted at the last renewal
    # (docs/DESIGN.md §4.9), minutes, not the lease that keeps it in the view. None: static view file.
    lease_deadline: float | None = None
    applied_version: int = 0
    listeners: list[Callable[[View], None]] = field(default_factory=list)

    def lease_valid(self) -> bool:
        return self.lease_deadline is None or time.monotonic() < self.lease_deadline

    def apply(self, view: View) -> bool:
        """Take a newer view (views are monotonic: an older or equal version is ignored)."""
        if view.version <= self.view.version and self.view.version != 0:
            return False
        self.view = view
        self.notify()
        return True

    def replace(self, view: View) -> None:
        """Take `view` whatever its version: the one held is another federation's (docs/DESIGN.md §4.7)."""
        self.view = view
        self.notify()

    def notify(self) -> None:
        """Tell the listeners about the current view (again, after one of them failed on it)."""
        for listener in self.listeners:
            listener(self.view)

    def set_node_id(self, node_id: int) -> None:
        self.me = replace(self.me, node_id=node_id)
