"""A deterministic process model of the reference cream line.

The model advances in fixed simulated-time steps (1 s by default). Every random number comes from
a stream seeded by ``(seed, signal name)`` and is drawn every step, so the served values are a
pure function of the seed, the durations, the step number and the faults switched on.

Production runs ``idle -> dispense -> water_heat -> oil_heat -> emulsify -> homogenize -> cool ->
add_actives -> qc -> fill -> idle``. A few things happen at the edges of phases, as on a real line,
so that the limits in force in a phase hold from its first second:

* the oil phase is heated during the second half of ``water_heat`` (both phases hot together);
* the phases are charged into EM-01 under vacuum, with the homogenizer started, in the last
  minutes of ``oil_heat``: ``emulsify`` begins at temperature, vacuum and speed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from blackbox.model import Value
from blackbox.sim import recipe
from blackbox.sim.faults import (
    DoorOpen,
    FaultRegistry,
    FillWeightDrift,
    HeatingOvershoot,
    LotNotOnRecipe,
    WeighingOutOfTolerance,
)
from blackbox.sim.recipe import IDLE, PHASES, Material
from blackbox.sim.signals import Noise, lag, stream

CHINA = timezone(timedelta(hours=8), "CST")
DEFAULT_EPOCH = datetime(2026, 11, 25, 6, 0, tzinfo=CHINA)
"""Simulated wall-clock time at step 0; batch numbers carry its date."""

AMBIENT_C = 22.0
FILL_TARGET_G = 51.0
FILL_SIGMA_G = 0.3
JARS_PER_S = 1.07  # ~64 jars/min: 500 kg in about 2.5 h
OPERATORS = ("OP-017", "OP-023", "OP-031")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The values served at one simulated instant."""

    step: int
    t: float
    """Simulated seconds since the model started."""
    values: Mapping[str, Value]
    bad: frozenset[str]
    """Tags served with bad quality (a sensor fault)."""

    def __getitem__(self, tag: str) -> Value:
        return self.values[tag]

    def num(self, tag: str) -> float:
        """A numeric value as a float (``TypeError`` for text and flags)."""
        value = self.values[tag]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{tag} is not numeric: {value!r}")
        return float(value)

    def text(self, tag: str) -> str:
        value = self.values[tag]
        if not isinstance(value, str):
            raise TypeError(f"{tag} is not text: {value!r}")
        return value


@dataclass(slots=True)
class Weighing:
    """One weighing of a dispense: a material (or a portion of it) on a scale."""

    material: Material
    target: float
    tolerance: float
    scale: str
    resolution: float
    tare: float
    lot: str
    actual: float | None = None
    done: bool = False


class ProcessModel:
    """The cream line as a function of simulated time.

    ``durations`` overrides phase durations (simulated seconds, keys as in
    :data:`recipe.DEFAULT_DURATIONS`); ``batches`` is how many batches to produce (``None``:
    forever) before the line stays idle.
    """

    def __init__(self, *, seed: int = 1, durations: Mapping[str, float] | None = None,
                 batches: int | None = 1, dt: float = 1.0, epoch: datetime = DEFAULT_EPOCH) -> None:
        if dt <= 0:
            raise ValueError("dt must be positive")
        if batches is not None and batches < 0:
            raise ValueError("batches must be >= 0 or None")
        self.seed = seed
        self.dt = dt
        self.epoch = epoch
        self.batches = batches
        self.durations = recipe.resolve_durations(durations)
        self.faults = FaultRegistry()
        self._steps = {p: max(1, round(d / dt)) for p, d in self.durations.items()}

        self.step_no = 0
        self.phase = IDLE
        self._phase_start = 0
        self.batch_id = ""
        self.batches_started = 0
        self.batches_completed = 0
        self._per_day: dict[str, int] = {}
        self._weighings: list[Weighing] = []
        self._operator = ""

        n = self._noise
        self._n = {
            "em_t": n("EM-01.temperature", 0.05, 0.08, 120), "em_j": n("EM-01.jacket_temperature", 0.1, 0.3, 120),
            "em_v": n("EM-01.vacuum", 0.0004, 0.0008, 60), "em_h": n("EM-01.homogenizer_speed", 4.0, 8.0, 60),
            "em_s": n("EM-01.scraper_speed", 0.2, 0.3, 60),
            "wt_t": n("WT-01.temperature", 0.05, 0.2, 180), "wt_a": n("WT-01.agitator_speed", 0.2, 0.3),
            "wt_l": n("WT-01.level", 0.05, 0.1, 30), "ot_t": n("OT-01.temperature", 0.05, 0.2, 180),
            "ot_a": n("OT-01.agitator_speed", 0.2, 0.3),
            "pw_c": n("PW-01.conductivity", 0.005, 0.03, 1800), "pw_toc": n("PW-01.toc", 2.0, 12.0, 1800),
            "pw_t": n("PW-01.loop_temperature", 0.03, 0.3, 1800),
            "cr_t": n("CR-01.temperature", 0.03, 0.15, 900), "cr_rh": n("CR-01.humidity", 0.2, 1.0, 900),
            "cr_dp": n("CR-01.differential_pressure", 0.3, 0.6, 120),
        }
        self._rng_weigh = stream(seed, "weighing")
        self._rng_qc = stream(seed, "qc")
        self._rng_fill = stream(seed, "fill")

        # physical state (noise-free)
        self._wt_temp, self._wt_level, self._wt_kg, self._wt_agit = 20.0, 0.0, 0.0, 0.0
        self._ot_temp, self._ot_kg, self._ot_agit = AMBIENT_C, 0.0, 0.0
        self._em_temp, self._em_jacket, self._em_vac = AMBIENT_C, AMBIENT_C, 0.0
        self._em_homog, self._em_scraper, self._overshoot = 0.0, 0.0, 0.0
        self._cool_tau = 1800.0
        self._dp = 12.0
        # latched records
        self._ws: dict[str, Value] = {"material": "", "lot": "", "target": 0.0, "actual": 0.0, "tolerance": 0.0,
                                     "scale": "", "operator": ""}
        self._weigh_count = 0
        self._net, self._tare, self._stable = 0.0, 0.0, True
        self._qc: dict[str, Value] = {"sample": "", "ph": 6.0, "viscosity": 11500.0, "temp": 25.0}
        self._fill_weight, self._jars, self._rejects = 0.0, 0, 0
        self._jar_acc, self._fill_shift = 0.0, 0.0

        self.snapshot = self._observe()

    # --- public -----------------------------------------------------------------------------

    @property
    def t(self) -> float:
        """Simulated seconds since start."""
        return self.step_no * self.dt

    @property
    def phase_elapsed(self) -> float:
        return (self.step_no - self._phase_start) * self.dt

    @property
    def sim_time(self) -> datetime:
        return self.epoch + timedelta(seconds=self.t)

    @property
    def finished(self) -> bool:
        """All requested batches are done and the line is idle for good."""
        return self.batches is not None and self.batches_completed >= self.batches

    def step(self) -> Snapshot:
        """Advance one step and return the values served after it."""
        self.step_no += 1
        self._advance_phase()
        self.faults.begin_step(self.t, self.phase)
        self._update()
        self.snapshot = self._observe()
        return self.snapshot

    def advance(self, seconds: float) -> Snapshot:
        """Advance ``seconds`` of simulated time (whole steps)."""
        for _ in range(max(0, round(seconds / self.dt))):
            self.step()
        return self.snapshot

    # --- phases -----------------------------------------------------------------------------

    def _noise(self, name: str, sigma: float, wander: float = 0.0, correlation_s: float = 300.0) -> Noise:
        return Noise(self.seed, name, sigma, wander, correlation_s, self.dt)

    def _phase_steps(self) -> int:
        if self.phase == "dispense":
            return max(self._steps["dispense"], len(self._weighings))
        return self._steps[self.phase]

    def _advance_phase(self) -> None:
        if self.phase == IDLE and self.finished:
            return
        if self.step_no - self._phase_start < self._phase_steps():
            return
        if self.phase == IDLE:
            self._start_batch()
            next_phase = PHASES[0]
        elif self.phase == PHASES[-1]:
            self.batches_completed += 1
            self.batch_id = ""
            next_phase = IDLE
        else:
            next_phase = PHASES[PHASES.index(self.phase) + 1]
        self._enter(next_phase)

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._phase_start = self.step_no
        if phase == "cool":
            # the steam valve's excess becomes the cooling start; cool to ~38 degC by the end
            self._em_temp += self._overshoot
            self._overshoot = 0.0
            span = self._em_temp - 20.0
            d = self._steps["cool"] * self.dt
            self._cool_tau = d / math.log(span / 18.0) if span > 18.5 else d
        elif phase == "fill":
            self._jars, self._rejects, self._jar_acc = 0, 0, 0.0

    def _start_batch(self) -> None:
        self.batches_started += 1
        day = self.sim_time.strftime("%Y-%m%d")
        self._per_day[day] = self._per_day.get(day, 0) + 1
        self.batch_id = f"{recipe.PRODUCT_PREFIX}-{day}-{self._per_day[day]:02d}"
        self._operator = OPERATORS[(self.batches_started - 1) % len(OPERATORS)]
        self._weighings = []
        for m in recipe.MATERIALS:
            portion = round(m.target_kg / m.portions, 4)
            tolerance = m.tolerance_kg / m.portions
            scale, resolution, tare = recipe.scale_for(portion)
            lot = self._lot(m, (self.batches_started - 1) // m.lot_span)
            self._weighings += [Weighing(m, portion, tolerance, scale, resolution, tare, lot)
                                for _ in range(m.portions)]
        self._wt_kg = self._ot_kg = 0.0

    def supplier_lots(self, batch_index: int = 0) -> list[tuple[str, str]]:
        """(material, supplier lot) the ``batch_index``-th batch weighs; purified water (made on site) aside."""
        return [(m.code, self._lot(m, batch_index // m.lot_span)) for m in recipe.MATERIALS if m.code != "RM-001"]

    def _lot(self, m: Material, index: int) -> str:
        """A supplier lot: a pure function of seed, material and lot index (at most 16 characters)."""
        if m.code == "RM-001":  # purified water is made on site: its lot is the batch's
            return "PW" + self.batch_id[5:]
        rng = stream(self.seed, f"lot:{m.code}:{index}")
        return f"L{m.code[3:]}-{2610 - index % 6}-{rng.randrange(1000, 10000)}"

    # --- physics ----------------------------------------------------------------------------

    def _update(self) -> None:
        dt, phase, e = self.dt, self.phase, self.phase_elapsed
        d = self._phase_steps() * dt
        self._dispense(e, d)
        self._water_tank(phase, e, d)
        self._oil_tank(phase, e, d)
        self._emulsifier(phase, e, d)
        if phase == "qc" and not self._qc_sampled() and (e >= 0.5 * d or e + dt >= d):
            self._take_sample()
        if phase == "fill":
            self._fill()
        door_open = bool(self.faults.active(DoorOpen))
        self._dp = lag(self._dp, 0.3 if door_open else 12.0, 8.0 if door_open else 20.0, dt)

    def _dispense(self, e: float, d: float) -> None:
        if self.phase != "dispense":
            self._net, self._tare, self._stable = 0.0, 0.0, True
            return
        n = len(self._weighings)
        slot = d / n
        k = min(n - 1, int(e / slot))
        w = self._weighings[k]
        frac = (e - k * slot) / slot
        if w.actual is None:
            w.actual = self._draw_actual(w)
        last_step_of_slot = e + self.dt >= (k + 1) * slot - 1e-9
        if frac < 0.1 and not last_step_of_slot:
            self._net, self._tare, self._stable = 0.0, w.tare, frac >= 0.05
        elif frac < 0.7 and not last_step_of_slot:
            x = (frac - 0.1) / 0.6
            self._net = round(w.actual * (1.0 - (1.0 - x) ** 3), 3)
            self._tare, self._stable = w.tare, False
        else:
            self._net, self._tare, self._stable = w.actual, w.tare, True
            if not w.done and (frac >= 0.75 or last_step_of_slot):
                self._complete(w)

    def _draw_actual(self, w: Weighing) -> float:
        tol = w.tolerance
        deviation = max(-0.9 * tol, min(0.9 * tol, self._rng_weigh.gauss(0.0, tol / 3.0)))
        fault = self.faults.consume(WeighingOutOfTolerance)
        if fault is not None:
            deviation = fault.factor * tol
        return round(round((w.target + deviation) / w.resolution) * w.resolution, 4)

    def _complete(self, w: Weighing) -> None:
        if w.actual is None:
            raise RuntimeError("internal error: expected w.actual is not None")
        w.done = True
        wrong = self.faults.consume(LotNotOnRecipe)
        self._ws = {"material": w.material.code, "lot": wrong.lot if wrong else w.lot, "target": w.target,
                    "actual": w.actual, "tolerance": round(w.tolerance, 4), "scale": w.scale,
                    "operator": self._operator}
        self._weigh_count += 1
        if w.material.stage == "water":
            self._wt_kg += w.actual
        elif w.material.stage == "oil":
            self._ot_kg += w.actual

    def _charging(self, phase: str, e: float, d: float) -> bool:
        """Whether the phases are being charged into EM-01 (the end of oil_heat)."""
        return phase == "oil_heat" and e >= d - min(180.0, 0.3 * d)

    def _transferred(self, phase: str, e: float, d: float) -> bool:
        """Whether the tanks have been emptied into EM-01 for this batch."""
        after = PHASES.index("emulsify")
        return self._charging(phase, e, d) or (phase in PHASES and PHASES.index(phase) >= after)

    def _water_tank(self, phase: str, e: float, d: float) -> None:
        dt = self.dt
        transferred = self._transferred(phase, e, d)
        level = 0.0 if transferred or phase == IDLE else self._wt_kg / 5.0  # 500 L tank, ~1 kg/L
        self._wt_level = lag(self._wt_level, level, 20.0, dt, max_rate=2.0)
        if phase == "water_heat":
            self._wt_temp = lag(self._wt_temp, 87.0, 120.0, dt, max_rate=3.5 / 60.0)
        elif phase == "oil_heat" and not transferred:
            self._wt_temp = lag(self._wt_temp, 86.5, 120.0, dt)
        elif phase == "dispense" and self._wt_level > 1.0:
            self._wt_temp = lag(self._wt_temp, 20.0, 60.0, dt)
        else:
            self._wt_temp = lag(self._wt_temp, AMBIENT_C, 7200.0, dt)  # insulated tank
        running = self._wt_level > 5.0
        target = 0.0 if not running else 60.0 if phase in ("water_heat", "oil_heat") else 40.0
        self._wt_agit = lag(self._wt_agit, target, 3.0, dt)

    def _oil_tank(self, phase: str, e: float, d: float) -> None:
        dt = self.dt
        transferred = self._transferred(phase, e, d)
        heating = (phase == "water_heat" and e >= d - 1500.0) or (phase == "oil_heat" and not transferred)
        if heating:
            self._ot_temp = lag(self._ot_temp, 75.0, 90.0, dt, max_rate=2.5 / 60.0)
        else:
            self._ot_temp = lag(self._ot_temp, AMBIENT_C, 7200.0, dt)  # insulated tank
        charged = self._ot_kg > 0 and not transferred and phase != IDLE
        target = 0.0 if not charged else 45.0 if heating else 30.0
        self._ot_agit = lag(self._ot_agit, target, 3.0, dt)

    def _emulsifier(self, phase: str, e: float, d: float) -> None:
        dt = self.dt
        heat_faults = self.faults.active(HeatingOvershoot)
        vac, homog, scraper = 0.0, 0.0, 0.0
        temp_target, temp_tau, jacket_offset = AMBIENT_C, 1800.0, 0.0
        if self._charging(phase, e, d):
            window = min(180.0, 0.3 * d)
            vac, scraper, temp_target, temp_tau, jacket_offset = -0.085, 35.0, 77.0, 25.0, 3.0
            homog = 3000.0 if e >= d - 0.4 * window else 0.0
        elif phase in ("emulsify", "homogenize"):
            vac, scraper, jacket_offset = -0.085, 35.0, 3.0
            homog = 3000.0
            temp_target, temp_tau = (75.0, 90.0) if phase == "emulsify" else (74.0, 90.0)
        elif phase == "cool":
            vac, scraper = -0.085, 30.0
            temp_target, temp_tau = 20.0, self._cool_tau
        elif phase == "add_actives":
            vac, scraper, temp_target, temp_tau = -0.085, 30.0, 37.0, 600.0
            homog = 1500.0 if 0.3 * d <= e < 0.6 * d else 0.0
        elif phase == "qc":
            scraper, temp_target, temp_tau = 20.0, 36.0, 1200.0
        elif phase == "fill":
            scraper, temp_target, temp_tau = 10.0, 33.0, 3600.0

        # a drifting steam valve adds heat while the controller holds the product hot
        if heat_faults and phase in ("emulsify", "homogenize"):
            self._overshoot += sum(f.rate_per_min for f in heat_faults) / 60.0 * dt
        elif self._overshoot:
            self._overshoot = lag(self._overshoot, 0.0, 300.0, dt)

        max_rate = 1.45 / 60.0 if phase == "cool" else None
        self._em_temp = lag(self._em_temp, temp_target, temp_tau, dt, max_rate=max_rate)
        if phase == "cool":
            jacket = max(12.0, self._em_temp - 16.0)
        elif phase in ("add_actives", "qc", "fill"):
            jacket = self._em_temp - 2.0
        else:
            jacket = self._em_temp + jacket_offset + 2.0 * self._overshoot
        self._em_jacket = lag(self._em_jacket, jacket, 30.0, dt)
        self._em_vac = lag(self._em_vac, vac, 15.0 if vac else 10.0, dt)
        self._em_homog = lag(self._em_homog, homog, 4.0, dt)
        self._em_scraper = lag(self._em_scraper, scraper, 3.0, dt)

    def _qc_sampled(self) -> bool:
        return bool(self.batch_id) and self._qc["sample"] == f"{self.batch_id}-Q1"

    def _take_sample(self) -> None:
        rng = self._rng_qc
        self._qc = {
            "ph": round(max(5.7, min(6.3, rng.gauss(6.0, 0.12))), 2),
            "viscosity": float(round(max(9000.0, min(14000.0, rng.gauss(11500.0, 900.0))), -1)),
            "temp": round(25.0 + rng.gauss(0.0, 0.15), 2),
            "sample": f"{self.batch_id}-Q1",
        }

    def _fill(self) -> None:
        drifts = self.faults.active(FillWeightDrift)
        if not drifts:
            self._fill_shift = 0.0
        self._jar_acc += JARS_PER_S * self.dt
        rng = self._rng_fill
        while self._jar_acc >= 1.0:
            self._jar_acc -= 1.0
            self._fill_shift += sum(f.g_per_100_jars for f in drifts) / 100.0
            weight = round(FILL_TARGET_G - self._fill_shift + rng.gauss(0.0, FILL_SIGMA_G), 2)
            other_defect = rng.random() < 0.003  # missing cap, bad label
            self._jars += 1
            if other_defect or weight < 49.0 or weight > 53.5:
                self._rejects += 1
            self._fill_weight = weight

    # --- observation ------------------------------------------------------------------------

    def _observe(self) -> Snapshot:
        n = {k: v() for k, v in self._n.items()}  # every stream advances every step
        t = self.t
        day = 2.0 * math.pi * ((t + 6 * 3600.0) % 86400.0) / 86400.0
        active = self.phase != IDLE
        v: dict[str, Value] = {
            "EM-01.batch_id": self.batch_id,
            "EM-01.product_code": recipe.PRODUCT if active else "",
            "EM-01.recipe": recipe.RECIPE if active else "",
            "EM-01.recipe_version": recipe.RECIPE_VERSION if active else "",
            "EM-01.phase": self.phase,
            "EM-01.temperature": round(self._em_temp + self._overshoot + n["em_t"], 2),
            "EM-01.jacket_temperature": round(self._em_jacket + n["em_j"], 2),
            "EM-01.vacuum": round(min(0.0, self._em_vac + (n["em_v"] if self._em_vac < -0.01 else 0.0)), 4) + 0.0,
            "EM-01.homogenizer_speed": _running(self._em_homog, n["em_h"], 100.0),
            "EM-01.scraper_speed": _running(self._em_scraper, n["em_s"]),
            "EM-01.phase_elapsed": float(self.phase_elapsed),
            "QC-01.ph": self._qc["ph"],
            "QC-01.viscosity": self._qc["viscosity"],
            "QC-01.sample_temperature": self._qc["temp"],
            "QC-01.sample_id": self._qc["sample"],
            "WS-01.material_code": self._ws["material"],
            "WS-01.supplier_lot": self._ws["lot"],
            "WS-01.target": self._ws["target"],
            "WS-01.actual": self._ws["actual"],
            "WS-01.tolerance": self._ws["tolerance"],
            "WS-01.scale_id": self._ws["scale"],
            "WS-01.operator": self._ws["operator"],
            "WS-01.weigh_count": self._weigh_count,
            "WS-01.net_weight": self._net,
            "WS-01.tare": self._tare,
            "WS-01.stable": self._stable,
            "FL-01.fill_weight": self._fill_weight,
            "FL-01.jars_filled": self._jars,
            "FL-01.reject_count": self._rejects,
            "FL-01.running": self.phase == "fill",
            "WT-01.temperature": round(self._wt_temp + n["wt_t"], 2),
            "WT-01.agitator_speed": _running(self._wt_agit, n["wt_a"]),
            "WT-01.level": _running(self._wt_level, n["wt_l"]),
            "OT-01.temperature": round(self._ot_temp + n["ot_t"], 2),
            "OT-01.agitator_speed": _running(self._ot_agit, n["ot_a"]),
            "PW-01.conductivity": round(max(0.055, 0.42 + n["pw_c"]), 3),
            "PW-01.toc": round(max(20.0, 110.0 + n["pw_toc"]), 1),
            "PW-01.loop_temperature": round(24.0 + n["pw_t"], 2),
            "CR-01.temperature": round(21.5 - 0.6 * math.cos(day) + n["cr_t"], 2),
            "CR-01.humidity": round(53.0 + 2.0 * math.cos(day) + n["cr_rh"], 1),
            "CR-01.differential_pressure": round(max(0.0, self._dp + n["cr_dp"]), 1),
            "CR-01.door_open": bool(self.faults.active(DoorOpen)),
        }
        bad = self.faults.apply(v, t)
        return Snapshot(self.step_no, t, v, bad)


def _running(value: float, noise: float, threshold: float = 1.0) -> float:
    """A speed or level: noisy while above ``threshold``, never negative, 0.1 resolution."""
    return round(max(0.0, value + (noise if value > threshold else 0.0)), 1)
