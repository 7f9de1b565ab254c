"""Logging set-up: readable lines on a terminal, one JSON object per line otherwise (journald, files)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

QUIET_LIBRARIES = ("asyncua", "pymodbus", "amqtt", "transitions", "paho", "alembic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LIBRARIES:  # asyncua at INFO dumps whole publish results (LIBRARY-NOTES)
        logging.getLogger(name).setLevel(logging.WARNING)
