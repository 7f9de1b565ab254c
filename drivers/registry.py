"""Finds drivers by protocol name through the ``blackbox.drivers`` entry-point group.

The core never imports a concrete driver: a new protocol is a module exposing a
:class:`~drivers.base.DriverSpec` and one entry point in its package's metadata.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from blackbox.config.sources import SourceConfig
from drivers.base import Driver, DriverSpec

GROUP = "blackbox.drivers"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted(_entry_points())


@cache
def spec(protocol: str) -> DriverSpec:
    """The driver registered for ``protocol``; ``KeyError`` if there is none.

    Only that driver's module is imported: a Modbus-only line never loads the OPC UA stack
    (asyncua: about 30 MiB of the agent's memory), nor the other way round.
    """
    ep = _entry_points()[protocol]
    loaded = ep.load()
    if not isinstance(loaded, DriverSpec):
        raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not a DriverSpec")
    return loaded


def config_model(protocol: str) -> type[SourceConfig]:
    return spec(protocol).config_model


def create(config: SourceConfig) -> Driver:
    return spec(config.protocol).factory(config)
