"""Finds drivers by protocol name through the ``blackbox.drivers`` entry-point group.

The core never imports a concrete driver: a new protocol is a module exposing a
:class:`~drivers.base.DriverSpec` and one entry point in its package's metadata.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from blackbox.config.sources import SourceConfig
from drivers.base import Driver, DriverSpec

GROUP = "blackbox.drivers"


@cache
def _specs() -> dict[str, DriverSpec]:
    specs: dict[str, DriverSpec] = {}
    for ep in entry_points(group=GROUP):
        spec = ep.load()
        if not isinstance(spec, DriverSpec):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not a DriverSpec")
        specs[ep.name] = spec
    return specs


def names() -> list[str]:
    return sorted(_specs())


def spec(protocol: str) -> DriverSpec:
    """The driver registered for ``protocol``; ``KeyError`` if there is none."""
    return _specs()[protocol]


def config_model(protocol: str) -> type[SourceConfig]:
    return spec(protocol).config_model


def create(config: SourceConfig) -> Driver:
    return spec(config.protocol).factory(config)
