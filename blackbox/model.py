"""The vocabulary every stage shares: samples, readings, events, quality, production context.

Timestamps are integer microseconds since the Unix epoch, UTC (``*_us``). Integers keep the
buffer, the sealed bytes and the store exact; reports render them as ISO 8601.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

Value = float | int | bool | str | None


class Quality(StrEnum):
    """OPC UA style quality of a value."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Category(StrEnum):
    """What a tag tells about the product (SPEC §5)."""

    MATERIAL = "material"
    PROCESS = "process"
    QUALITY = "quality"
    ENVIRONMENT = "environment"
    CONTEXT = "context"


def now_us() -> int:
    """Wall-clock time in integer microseconds, UTC."""
    return time.time_ns() // 1000


def iso(ts_us: int | None) -> str | None:
    """Render a microsecond timestamp as ISO 8601 UTC (``...Z``)."""
    if ts_us is None:
        return None
    return datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Sample:
    """One value as a driver read it, before the buffer gives it a sequence number."""

    tag: str
    value: Value
    quality: Quality = Quality.GOOD
    reason: str | None = None
    source_ts_us: int | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """The production context active when something was recorded."""

    batch: str | None = None
    product: str | None = None
    recipe: str | None = None
    recipe_version: str | None = None
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """A sample made durable: it has a gateway-wide sequence number and its context."""

    seq: int
    tag: str
    value: Value
    quality: Quality
    reason: str | None
    ts_us: int
    source_ts_us: int | None
    batch: str | None
    phase: str | None


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the buffer gives it a sequence number.

    ``type`` is a dotted name (``alarm.raised``, ``source.disconnected``, ``batch.started``,
    ``material.consumed``, ``qc.result``, ``config.applied``…); ``subject`` names what it is
    about (a tag, a source, a unit); ``data`` holds the rest and must be JSON-serialisable.
    """

    type: str
    subject: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ts_us: int | None = None
    context: Context | None = None
    """Context to attribute the event to, when not the one in force at commit (``batch.ended``)."""


@dataclass(frozen=True, slots=True)
class Event:
    """A durable event: sequence number, time, context."""

    seq: int
    type: str
    subject: str | None
    data: dict[str, Any]
    ts_us: int
    batch: str | None
    phase: str | None


Record = Reading | Event


@dataclass(frozen=True, slots=True)
class StateRows:
    """Rows of saved state to write with a commit: key -> JSON text, ``None`` to delete the row.

    The rule engine keeps one row per rule, so that a commit writes only the rules whose state
    changed (:meth:`blackbox.rules.RuleEngine.state_rows`); ``replace`` says the rows are the
    whole state and every other row goes (an engine's first commit, after a start or a reload).
    """

    rows: dict[str, str | None]
    replace: bool = False
    taken: frozenset[Any] = frozenset()
    """What the writer marked as saved by these rows (given back if the commit fails)."""
