"""The driver interface: what the agent needs from any protocol, and nothing more.

A driver is built from its own :class:`~blackbox.config.SourceConfig` subclass. The agent calls
:meth:`Driver.connect`, then :meth:`Driver.read` once per poll cycle, and :meth:`Driver.close` at
the end. ``read`` returns one :class:`~blackbox.model.Sample` per configured tag, every cycle: a
value that could not be read or converted is a sample of bad quality with a reason, never a gap.
A lost connection raises :class:`SourceUnavailable`; the agent then reconnects with back-off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from blackbox.config import SourceConfig
from blackbox.model import Sample


class SourceUnavailable(Exception):
    """The source cannot be reached (connect failed, connection lost, timeout)."""


@dataclass
class SourceHealth:
    """What diagnostics show about a source."""

    connected: bool = False
    last_error: str | None = None
    last_round_trip_s: float | None = None
    requests_per_cycle: int = 0


class Driver(Protocol):
    """One connection to one source (a PLC, a server, a serial bus)."""

    @property
    def config(self) -> SourceConfig:
        """The source's configuration (the driver's own subclass)."""

    @property
    def health(self) -> SourceHealth:
        """What diagnostics show about the source."""

    async def connect(self) -> None:
        """Open the connection; raise :class:`SourceUnavailable` if it cannot be opened."""

    async def read(self) -> list[Sample]:
        """Read every configured tag once; raise :class:`SourceUnavailable` if the link is lost."""

    async def close(self) -> None:
        """Close the connection; never raises."""


@dataclass(frozen=True)
class DriverSpec:
    """What a protocol module registers: its configuration model and how to build a driver."""

    protocol: str
    config_model: type[SourceConfig]
    factory: Callable[[SourceConfig], Driver]
