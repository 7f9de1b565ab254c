"""Faults that can be switched on while the simulator runs.

Three families:

* **tag faults** (:class:`TagFault`) act on a served value after the process model computed it:
  a sensor that drifts, spikes, freezes or reports bad quality. The process itself is unaffected.
* **process faults** act on the simulated physics; the process model asks the registry whether
  one is active (e.g. :class:`HeatingOvershoot` heats the product, and the jacket with it).
* **device faults** act on a server's answers: :class:`IllegalAddress` makes the Modbus device
  refuse a register block. They act from the moment they are added (no model step needed).
  A server restart or a network disconnect is an action, not a state: see
  :meth:`blackbox.sim.Simulator.restart_server` and :meth:`~blackbox.sim.Simulator.disconnect`.

A fault starts at the first model step after it was added (its ``started`` is that simulated time),
or, if it names a ``phase``, at the first step the line is in that phase; it ends when removed or
after ``duration`` simulated seconds. Faults draw no random numbers from
the model's streams, so the unfaulted tags keep exactly the values they would have had.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from blackbox.model import Value


@dataclass(eq=False)
class Fault:
    """Base of all faults. ``duration`` in simulated seconds (``None``: until removed); ``phase``
    delays the start until the line is in that phase."""

    duration: float | None = field(default=None, kw_only=True)
    phase: str | None = field(default=None, kw_only=True)
    started: float | None = field(default=None, init=False)
    id: int = field(default=0, init=False)

    def elapsed(self, t: float) -> float:
        return 0.0 if self.started is None else t - self.started

    def describe(self) -> str:
        return type(self).__name__


# --- tag faults --------------------------------------------------------------------------------


@dataclass(eq=False)
class TagFault(Fault):
    """A sensor fault on one tag."""

    tag: str

    def apply(self, value: Value, t: float) -> Value:
        return value

    @property
    def bad(self) -> bool:
        """Whether the tag is served with bad quality while the fault is active."""
        return False

    def describe(self) -> str:
        return f"{type(self).__name__}({self.tag})"


@dataclass(eq=False)
class Drift(TagFault):
    """The value drifts by ``rate`` units per simulated second, up to ``limit`` if given."""

    rate: float = 0.0
    limit: float | None = None

    def apply(self, value: Value, t: float) -> Value:
        if not isinstance(value, float):
            return value
        shifted = value + self.rate * self.elapsed(t)
        if self.limit is None:
            return shifted
        # the drift stops at the limit; a value already beyond it is left alone
        if self.rate > 0:
            return max(value, min(shifted, self.limit))
        return min(value, max(shifted, self.limit))


@dataclass(eq=False)
class Spike(TagFault):
    """The value jumps by ``magnitude`` for ``width`` simulated seconds, then returns."""

    magnitude: float = 0.0
    width: float = 2.0

    def apply(self, value: Value, t: float) -> Value:
        if isinstance(value, float) and self.elapsed(t) < self.width:
            return value + self.magnitude
        return value


@dataclass(eq=False)
class Frozen(TagFault):
    """The value sticks at what it was when the fault started (a hung transmitter)."""

    _held: Value = field(default=None, init=False, repr=False)
    _holding: bool = field(default=False, init=False, repr=False)

    def apply(self, value: Value, t: float) -> Value:
        if not self._holding:
            self._held, self._holding = value, True
        return self._held


@dataclass(eq=False)
class Stuck(TagFault):
    """The value reads ``value`` whatever the process does."""

    value: Value = 0.0

    def apply(self, value: Value, t: float) -> Value:
        return self.value


@dataclass(eq=False)
class BadQuality(TagFault):
    """The sensor reports bad quality: OPC UA ``BadSensorFailure``; Modbus float registers NaN."""

    @property
    def bad(self) -> bool:
        return True


# --- process faults ----------------------------------------------------------------------------


@dataclass(eq=False)
class HeatingOvershoot(Fault):
    """A steam valve drifting open: EM-01 climbs ``rate`` degC per simulated minute in emulsify/homogenize.

    The default emulsify (10 min) only climbs 3 degC at 0.3 degC/min: give emulsify a longer duration
    to see the 80 and 85 degC crossings.
    """

    rate_per_min: float = 0.3


@dataclass(eq=False)
class FillWeightDrift(Fault):
    """Nozzle wear: the mean fill weight falls ``g_per_100_jars`` per 100 jars filled."""

    g_per_100_jars: float = 0.05


@dataclass(eq=False)
class DoorOpen(Fault):
    """The clean-room door is left open: the differential pressure collapses to about 0 Pa."""


@dataclass(eq=False)
class WeighingOutOfTolerance(Fault):
    """The next completed weighing lands ``factor`` tolerances off target; then the fault ends."""

    factor: float = 2.5


@dataclass(eq=False)
class LotNotOnRecipe(Fault):
    """The next weighing scans a lot that is not released for this recipe; then the fault ends."""

    lot: str = "XX-UNRELEASED"


# --- device faults -----------------------------------------------------------------------------


@dataclass(eq=False)
class IllegalAddress(Fault):
    """The Modbus device answers "illegal data address" to any read of ``table`` (``hr`` or ``ir``)
    that touches registers ``start`` to ``start + count - 1``: a block missing from the PLC's map."""

    table: str = "hr"
    start: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.table not in ("hr", "ir"):
            raise ValueError(f"IllegalAddress applies to register tables hr and ir, not {self.table!r}")
        if self.start < 0 or self.count < 1:
            raise ValueError("IllegalAddress needs start >= 0 and count >= 1")

    def refuses(self, table: str, address: int, count: int) -> bool:
        """Whether a read of ``count`` registers of ``table`` from ``address`` touches the block."""
        return table == self.table and address < self.start + self.count and self.start < address + count

    def describe(self) -> str:
        return f"IllegalAddress({self.table}:{self.start}-{self.start + self.count - 1})"


def vacuum_leak(*, duration: float | None = None) -> Drift:
    """EM-01 vacuum relaxing from about -0.085 towards -0.05 MPa over about 15 minutes."""
    return Drift(tag="EM-01.vacuum", rate=0.035 / 900.0, limit=-0.05, duration=duration)


def homogenizer_sag(*, duration: float | None = None) -> Drift:
    """A worn belt: EM-01 homogenizer speed dropping 20 rpm per minute."""
    return Drift(tag="EM-01.homogenizer_speed", rate=-20.0 / 60.0, duration=duration)


def conductivity_creep(*, per_hour: float = 0.25, duration: float | None = None) -> Drift:
    """Resin exhaustion: PW-01 conductivity creeping up ``per_hour`` uS/cm per hour."""
    return Drift(tag="PW-01.conductivity", rate=per_hour / 3600.0, duration=duration)


# --- registry ----------------------------------------------------------------------------------

F = TypeVar("F", bound=Fault)


class FaultRegistry:
    """The faults in force. The process model calls :meth:`begin_step` and :meth:`apply` every step."""

    def __init__(self) -> None:
        self._faults: dict[int, Fault] = {}
        self._ids = itertools.count(1)

    def add(self, fault: Fault) -> int:
        """Switch ``fault`` on from the next step; returns its id (for :meth:`remove`)."""
        fault.id = next(self._ids)
        fault.started = None
        self._faults[fault.id] = fault
        return fault.id

    def remove(self, fault_id: int) -> None:
        self._faults.pop(fault_id, None)

    def clear(self) -> None:
        self._faults.clear()

    def __iter__(self) -> Iterator[Fault]:
        return iter(list(self._faults.values()))

    def __len__(self) -> int:
        return len(self._faults)

    def begin_step(self, t: float, phase: str | None = None) -> None:
        """Start pending faults at ``t`` (in ``phase``) and drop those whose duration has run out."""
        for fault in list(self._faults.values()):
            if fault.started is None:
                if fault.phase is None or fault.phase == phase:
                    fault.started = t
            elif fault.duration is not None and t - fault.started >= fault.duration:
                del self._faults[fault.id]

    def active(self, kind: type[F]) -> list[F]:
        return [f for f in self._faults.values() if isinstance(f, kind) and f.started is not None]

    def consume(self, kind: type[F]) -> F | None:
        """Take a one-shot fault of ``kind`` (it ends now), or ``None``."""
        found = self.active(kind)
        if not found:
            return None
        del self._faults[found[0].id]
        return found[0]

    def apply(self, values: dict[str, Value], t: float) -> frozenset[str]:
        """Apply tag faults to ``values`` in place; return the tags served with bad quality."""
        bad: set[str] = set()
        for fault in self.active(TagFault):
            if fault.tag not in values:
                continue
            values[fault.tag] = fault.apply(values[fault.tag], t)
            if fault.bad:
                bad.add(fault.tag)
        return frozenset(bad)


FAULT_NAMES: dict[str, str] = {
    "heating_overshoot": "EM-01 steam valve drifting open: +0.3 degC/min in emulsify/homogenize",
    "vacuum_leak": "EM-01 vacuum relaxing towards -0.05 MPa over 15 min",
    "homogenizer_sag": "EM-01 homogenizer losing 20 rpm/min",
    "fill_weight_drift": "FL-01 mean fill weight falling 0.05 g per 100 jars",
    "conductivity_creep": "PW-01 conductivity rising 0.25 uS/cm per hour",
    "door_open": "CR-01 door open: differential pressure about 0 Pa",
    "weighing_out_of_tolerance": "the next WS-01 weighing 2.5 tolerances off target",
    "lot_not_on_recipe": "the next WS-01 weighing scans an unreleased lot",
    "frozen": "TAG frozen at its current value",
    "bad_quality": "TAG served with bad quality",
    "drift": "TAG drifting by rate units per simulated second (default 0.01)",
    "spike": "TAG jumping by magnitude (default 10) for width simulated seconds (default 2)",
    "stuck": "TAG reading a constant value (default 0)",
    "illegal_address": "Modbus device refusing table (hr) registers start (32) to start+count-1 (count 8)",
}
"""Faults :func:`make_fault` builds by name (for the command line)."""

_TAG_FAULTS: dict[str, type[TagFault]] = {"frozen": Frozen, "bad_quality": BadQuality, "drift": Drift,
                                          "spike": Spike, "stuck": Stuck}
_DEFAULTS: dict[str, dict[str, Any]] = {"drift": {"rate": 0.01}, "spike": {"magnitude": 10.0},
                                        "illegal_address": {"table": "hr", "start": 32, "count": 8}}


def make_fault(name: str, *, tag: str | None = None, phase: str | None = None,
               duration: float | None = None, **params: Any) -> Fault:
    """Build a fault by its name in :data:`FAULT_NAMES`; the tag faults need ``tag``.

    ``params`` set the fault's own fields (``rate``, ``magnitude``, ``width``, ``value``, ``table``,
    ``start``, ``count``); an unknown one is a ``ValueError``.
    """
    fault: Fault
    fields = {**_DEFAULTS.get(name, {}), **params}
    if name in _TAG_FAULTS:
        if tag is None:
            raise ValueError(f"fault {name!r} needs a tag")
        fault = _build(name, _TAG_FAULTS[name], tag=tag, **fields)
    elif name == "illegal_address":
        fault = _build(name, IllegalAddress, **fields)
    elif params:
        raise ValueError(f"fault {name!r} takes no parameters (got {', '.join(sorted(params))})")
    elif name == "heating_overshoot":
        fault = HeatingOvershoot()
    elif name == "vacuum_leak":
        fault = vacuum_leak()
    elif name == "homogenizer_sag":
        fault = homogenizer_sag()
    elif name == "fill_weight_drift":
        fault = FillWeightDrift()
    elif name == "conductivity_creep":
        fault = conductivity_creep()
    elif name == "door_open":
        fault = DoorOpen()
    elif name == "weighing_out_of_tolerance":
        fault = WeighingOutOfTolerance()
    elif name == "lot_not_on_recipe":
        fault = LotNotOnRecipe()
    else:
        raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
    fault.phase, fault.duration = phase, duration
    return fault


def _build(name: str, kind: type[F], **fields: Any) -> F:
    try:
        return kind(**fields)
    except TypeError as exc:  # an unknown keyword: say which fault and which parameters exist
        known = [f for f in kind.__dataclass_fields__ if f not in ("duration", "phase", "started", "id", "tag")
                 and not f.startswith("_")]
        raise ValueError(f"fault {name!r}: {exc} (parameters: {', '.join(known) or 'none'})") from None
