"""The proxy's last applied view on disk, so a proxy (re)started while no controller answers still serves
(static stability, docs/DESIGN.md §4.7, §4.9).

Two files, each replaced atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves the
old or the new content, never a torn one:

- `PATH`: the view (with its version), the proxy's node id and instance id. Written after a view is applied
  and drained and *before* the proxy acks it to the controller, so the saved version is at least every
  version the controller was told this proxy applied.
- `PATH.fence`: until when (wall clock) the controller allowed this proxy to produce, written after each
  renewal. A lower bound of the deadline the controller counts for this proxy (docs/DESIGN.md §4.9): a proxy
  started from the cache produces only until then, and only consumes after it until a controller answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fedkafka.view.model import View


@dataclass(frozen=True, slots=True)
class SavedView:
    view: View
    node_id: int
    produce_until: float  # wall-clock seconds; 0 when no deadline was saved


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a reader (or a restart after a crash) sees the old or the new bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss
    finally:
        os.close(dir_fd)


class ViewCache:
    def __init__(self, path: Path, instance_id: str):
        self.path = path
        self.fence_path = path.with_name(path.name + ".fence")
        self.instance_id = instance_id

    def save_view(self, view: View, node_id: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"instance_id": self.instance_id, "node_id": node_id, "version": view.version,
                "saved_at": time.time(), "view": view.to_dict()}
        write_atomically(self.path, json.dumps(body, separators=(",", ":")).encode())

    def save_fence(self, produce_until: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"instance_id": self.instance_id, "produce_until": produce_until}
        write_atomically(self.fence_path, json.dumps(body).encode())

    def load(self) -> SavedView | None:
        """The saved view, or None when there is none, it is unreadable, or another instance wrote it."""
        try:
            body = json.loads(self.path.read_bytes())
            if body.get("instance_id") != self.instance_id:
                return None
            view = View.from_dict(body["view"])
            if view.version != body["version"]:
                return None
            node_id = int(body["node_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return SavedView(view=view, node_id=node_id, produce_until=self._produce_until())

    def _produce_until(self) -> float:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            body = json.loads(self.fence_path.read_bytes())
            if body.get("instance_id") == self.instance_id:
                return float(body["produce_until"])
        return 0.0
