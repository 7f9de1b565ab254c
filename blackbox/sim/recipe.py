"""The reference cream line's product, recipe, materials and phases (../shared/REFERENCE-LINE.md).

These figures drive the simulated PLCs only. The agent never reads them: it learns limits from the
configuration (``config/demo.yaml``), as it would on a real plant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PRODUCT = "FC-050"
PRODUCT_PREFIX = "FC050"
RECIPE = "R-FC-050"
RECIPE_VERSION = "3"

IDLE = "idle"
PHASES: tuple[str, ...] = (
    "dispense",
    "water_heat",
    "oil_heat",
    "emulsify",
    "homogenize",
    "cool",
    "add_actives",
    "qc",
    "fill",
)
"""Phases of one batch, in order; the line is ``idle`` before the first and between batches."""

DEFAULT_DURATIONS: Mapping[str, float] = {
    IDLE: 600.0,  # changeover before each batch
    "dispense": 2400.0,  # 30-45 min
    "water_heat": 2400.0,  # 40 min: heat-up, then the >= 85 degC sanitising hold
    "oil_heat": 1800.0,  # 30 min melt hold; the phases are charged into EM-01 at its end
    "emulsify": 600.0,  # 10 min
    "homogenize": 300.0,  # 5 min
    "cool": 3000.0,  # 40-60 min
    "add_actives": 600.0,  # 10 min
    "qc": 1200.0,  # 20 min
    "fill": 9000.0,  # 2-3 h
}
"""Simulated seconds per phase; ``idle`` is the gap before each batch."""


@dataclass(frozen=True, slots=True)
class Material:
    code: str
    name: str
    target_kg: float
    tolerance_kg: float
    stage: str
    """Where it goes: ``water`` (WT-01), ``oil`` (OT-01), ``actives`` (EM-01 at add_actives), ``ph`` (at qc)."""
    portions: int = 1
    """Weighings needed: a target above the scale's capacity is weighed in equal portions."""
    lot_span: int = 3
    """Batches one supplier lot lasts, so that a lot traces to several batches."""


def _pct(target: float, pct: float) -> float:
    return round(target * pct / 100.0, 4)


MATERIALS: tuple[Material, ...] = (
    # 361.5 kg exceeds SC-01's 150 kg: three portions of 120.5 kg, one supplier lot.
    Material("RM-001", "purified water", 361.5, _pct(361.5, 0.5), "water", portions=3, lot_span=1),
    Material("RM-010", "glycerin", 25.0, _pct(25.0, 0.5), "water"),
    Material("RM-030", "carbomer", 2.5, 0.02, "water", lot_span=8),
    Material("RM-021", "caprylic/capric triglyceride", 30.0, _pct(30.0, 0.5), "oil"),
    Material("RM-022", "cetearyl alcohol", 20.0, _pct(20.0, 0.5), "oil", lot_span=4),
    Material("RM-023", "shea butter", 15.0, _pct(15.0, 0.5), "oil", lot_span=4),
    Material("RM-040", "niacinamide", 20.0, _pct(20.0, 0.2), "actives", lot_span=5),
    Material("RM-050", "phenoxyethanol", 4.0, 0.02, "actives", lot_span=10),
    Material("RM-060", "fragrance", 1.0, 0.01, "actives", lot_span=10),
    Material("RM-031", "triethanolamine", 2.5, 0.02, "ph", lot_span=10),
)

SCALES: tuple[tuple[str, float, float, float], ...] = (
    # id, capacity kg, resolution kg, typical container tare kg
    ("SC-02", 3.0, 0.001, 0.35),
    ("SC-01", 150.0, 0.01, 12.5),
)


def scale_for(portion_kg: float) -> tuple[str, float, float]:
    """The smallest scale that can weigh ``portion_kg``: ``(id, resolution, tare)``."""
    for scale_id, capacity, resolution, tare in SCALES:
        if portion_kg + tare <= capacity:
            return scale_id, resolution, tare
    raise ValueError(f"no scale can weigh {portion_kg} kg")


def resolve_durations(overrides: Mapping[str, float] | None) -> dict[str, float]:
    """Default durations with ``overrides`` applied; unknown phases and non-positive times are errors."""
    durations = dict(DEFAULT_DURATIONS)
    for phase, seconds in (overrides or {}).items():
        if phase not in durations:
            raise ValueError(f"unknown phase {phase!r} in durations (known: {', '.join(durations)})")
        if not seconds > 0:
            raise ValueError(f"duration of {phase!r} must be positive, not {seconds!r}")
        durations[phase] = float(seconds)
    return durations
