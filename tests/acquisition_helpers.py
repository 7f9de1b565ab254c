"""Helpers of the acquisition tests: sources for the simulator, a sink for pollers, bounded waits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blackbox.model import EventDraft, Quality, Sample
from blackbox.sim import Simulator
from blackbox.sim.tags import TAGS


@dataclass
class Cycle:
    at: float
    """Monotonic time the cycle was recorded."""
    samples: list[Sample]
    events: list[EventDraft]


@dataclass
class Collector:
    """The poller's sink (``record(samples, events)``), keeping every cycle with its arrival time.

    The agent's Recorder makes the same call durable; the pollers' behaviour under test (timing,
    events, what is recorded) is what reaches this call.
    """

    cycles: list[Cycle] = field(default_factory=list)

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> None:
        self.cycles.append(Cycle(time.monotonic(), list(samples), list(events)))

    def events(self, kind: str | None = None) -> list[EventDraft]:
        return [e for c in self.cycles for e in c.events if kind is None or e.type == kind]

    def samples(self, tag: str | None = None) -> list[Sample]:
        return [s for c in self.cycles for s in c.samples if tag is None or s.tag == tag]

    def reading_times(self, tag: str) -> list[float]:
        return [c.at for c in self.cycles if any(s.tag == tag for s in c.samples)]




def sim_source(sim: Simulator, protocol: str, **settings: Any) -> dict[str, Any]:
    """A source (as parsed YAML) reading every tag the simulator serves over ``protocol``."""
    tags = []
    for t in TAGS:
        if t.protocol != protocol:
            continue
        tag: dict[str, Any] = {"name": t.name, "address": t.address, "type": t.type, "category": str(t.category),
                               "unit": t.unit}
        if t.length is not None:
            tag["length"] = t.length
        tags.append(tag)
    base: dict[str, Any]
    if protocol == "opcua":
        base = {"name": "line-opcua", "protocol": "opcua", "endpoint": sim.opcua_endpoint,
                "namespace_uri": sim.namespace_uri}
    else:
        base = {"name": "line-modbus", "protocol": "modbus", "host": sim.host, "port": sim.modbus_port,
                "unit_id": sim.modbus_unit_id}
    return {**base, "poll_interval": 0.1, "timeout": 1.0, "reconnect_min": 0.1, "reconnect_max": 0.5,
            **settings, "tags": tags}


def good(samples: Sequence[Sample]) -> bool:
    return all(s.quality is Quality.GOOD for s in samples)
