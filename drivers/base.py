"""The driver interface: what the agent needs from any protocol, and nothing more.

A driver is built from its own :class:`~blackbox.config.SourceConfig` subclass. The agent calls
:meth:`Driver.connect`, then :meth:`Driver.read` once per poll cycle, and :meth:`Driver.close` at
the end. ``read`` returns one sample per configured tag, every cycle, as
:class:`~blackbox.columns.SampleColumns` (the tag names the same tuple every cycle, the values one
list), which the agent records without an object per value: a value that could not be read or
converted is a sample of bad quality with a reason, never a gap.
A lost connection raises :class:`SourceUnavailable`; the agent then reconnects with back-off.

A protocol that can push changes (OPC UA monitored items) may also implement
:class:`SubscribingDriver`: when its configuration asks for it (``subscribes`` is true) the agent
calls :meth:`SubscribingDriver.subscribe` after connecting and then takes batches of changes from
:meth:`SubscribingDriver.changes` instead of polling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, runtime_checkable

from blackbox.columns import SampleColumns
from blackbox.config.sources import SourceConfig
from blackbox.model import Quality, Sample


class SourceUnavailable(Exception):
    """The source cannot be reached (connect failed, connection lost, timeout)."""


@dataclass
class SourceHealth:
    """What diagnostics show about a source.

    ``tags_good``/``tags_uncertain``/``tags_bad`` count the samples of the last cycle (for a
    subscription: the latest value of every tag). ``details`` holds protocol specifics
    (learned request splits, the server's read limit, subscription counters) for ``diag``.
    """

    connected: bool = False
    last_error: str | None = None
    last_round_trip_s: float | None = None
    requests_per_cycle: int = 0
    tags_good: int = 0
    tags_uncertain: int = 0
    tags_bad: int = 0
    lost: int = 0
    """Values the source is known to have lost since the driver was made (a subscription's queue
    overflows, notification messages that never came); the agent records each increase as an event."""
    resubscribed: int = 0
    """Times a silent subscription was rebuilt (changes in the silent time may be missing); the agent
    records each increase as an event."""
    details: dict[str, Any] = field(default_factory=dict)

    def count(self, samples: SampleColumns) -> None:
        """Set the good/uncertain/bad counts from one cycle's samples (two C-level counts)."""
        qualities = samples.qualities
        good, bad = qualities.count(Quality.GOOD), qualities.count(Quality.BAD)
        self.tags_good, self.tags_uncertain, self.tags_bad = good, len(qualities) - good - bad, bad

    def tally(self, qualities: Iterable[Quality]) -> None:
        """Set the good/uncertain/bad counts from the tags' qualities."""
        good = uncertain = bad = 0
        for quality in qualities:
            if quality is Quality.GOOD:
                good += 1
            elif quality is Quality.BAD:
                bad += 1
            else:
                uncertain += 1
        self.tags_good, self.tags_uncertain, self.tags_bad = good, uncertain, bad


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

    async def read(self) -> SampleColumns:
        """Read every configured tag once; raise :class:`SourceUnavailable` if the link is lost.

        One sample per tag, in configuration order.
        """

    async def close(self) -> None:
        """Close the connection; never raises."""


@runtime_checkable
class SubscribingDriver(Protocol):
    """A driver that can deliver changes pushed by the source instead of being polled."""

    @property
    def subscribes(self) -> bool:
        """Whether this source is configured to be read by subscription."""

    async def subscribe(self) -> None:
        """After :meth:`Driver.connect`: create the subscriptions; :class:`SourceUnavailable` on a lost link.

        The first :meth:`changes` after it returns the current value of every tag (or a bad sample
        with the reason for a tag that cannot be subscribed).
        """

    async def changes(self) -> list[Sample]:
        """Wait for the next changes (at least one sample); :class:`SourceUnavailable` on a lost link.

        The driver watches its subscription while waiting: one that has gone silent is rebuilt.
        """


def subscribes(driver: object) -> TypeGuard[SubscribingDriver]:
    """Whether the agent should take ``driver``'s data by subscription rather than by polling."""
    return isinstance(driver, SubscribingDriver) and driver.subscribes


@dataclass(frozen=True)
class DriverSpec:
    """What a protocol module registers: its configuration model and how to build a driver."""

    protocol: str
    config_model: type[SourceConfig]
    factory: Callable[[SourceConfig], Driver]
