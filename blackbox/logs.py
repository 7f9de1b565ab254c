"""Logging set-up: readable lines on a terminal, one JSON object per line otherwise (journald, files)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson

QUIET_LIBRARIES = ("asyncua", "pymodbus", "amqtt", "transitions", "paho", "alembic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the one at set-up.

    A program (or a test harness) that swaps ``sys.stderr`` for a while and closes the substitute
    afterwards would otherwise leave the root logger writing to a closed stream.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """``StreamHandler`` sets it; the stream is always looked up afresh."""


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``; calling it again replaces its handler, others on the root logger stay."""
    handler = StderrHandler()
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:  # asyncua at INFO dumps whole publish results (LIBRARY-NOTES)
        logging.getLogger(name).setLevel(logging.WARNING)
