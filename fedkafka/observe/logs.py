"""Service logging: text (the default) or one JSON object per line (`FEDKAFKA_LOG_FORMAT=json`), at
`FEDKAFKA_LOG_LEVEL` (default INFO).

A JSON line carries time, level, logger, pid, message, the traceback when there is one, and the structured
fields a record was given (`extra={"refusal": {...}}`: reason, topic, partition, client.id, detail). Nothing
the services log carries a token; as a second guard, a bearer token that reaches a message is masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"
STRUCTURED_FIELDS = ("refusal",)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def mask(text: str) -> str:
    return _BEARER.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "pid": record.process,
                "msg": mask(record.getMessage())}
        for name in STRUCTURED_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def configure(level: str | None = None, fmt: str | None = None) -> None:
    """Set up the root logger of a service process (replacing any handler set before)."""
    level = (level or os.environ.get("FEDKAFKA_LOG_LEVEL") or "INFO").upper()
    fmt = (fmt or os.environ.get("FEDKAFKA_LOG_FORMAT") or "text").lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"FEDKAFKA_LOG_FORMAT must be text or json, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else MaskingFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
