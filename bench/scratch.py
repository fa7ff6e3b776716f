"""A scratch directory per benchmark run (Kafka data, databases, service logs)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """Removed when the run succeeds; kept, and named on stderr, when it fails (its logs say why)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    except BaseException:
        print(f"kept {tmp} for the logs of the failed run", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
