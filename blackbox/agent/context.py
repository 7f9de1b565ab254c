"""Production context: the active batch and phase, lots consumed, QC results (SPEC §5).

The context comes from PLC tags or from operator commands (``blackbox batch start|phase|end``),
per field: a batch or phase with a configured tag follows the tag, one without follows the
operator. The tracker keeps the latest good value of every tag it cares about. A change of a
context tag becomes a ``batch.*`` event; a change of a material or QC trigger tag becomes a
``material.consumed`` or ``qc.result`` event built from the values read with it. Its state is
saved with every commit, so that a restarted agent neither repeats nor misses an event.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from blackbox.columns import TagPicker
from blackbox.config import ContextConfig, MaterialTrigger, QcTrigger, TagConfig
from blackbox.model import Context, EventDraft, Quality, Sample, Value

MAX_CONTEXT_TEXT = 128
REMEMBERED_BATCHES = 256
"""Ended batch ids remembered to recognise one that starts again (a PLC whose batch counter restarted)."""
OCCURRENCE_MARK = "#"
"""A batch id seen again after it ended is recorded as ``<id>#<n>``, its n-th occurrence."""


class MaterialTolerance(Protocol):
    """A material's tolerance in a specification (:class:`blackbox.spec.model.MaterialSpec`)."""

    @property
    def tolerance(self) -> float | None: ...

    @property
    def tolerance_pct(self) -> float | None: ...


class ContextError(ValueError):
    """An operator's context change that cannot be applied; the message says why."""


class ContextTracker:
    def __init__(self, config: ContextConfig, tags: dict[str, TagConfig], state: dict[str, Any] | None = None,
                 material_specs: Mapping[str, MaterialTolerance] | None = None) -> None:
        self.config = config
        self.tags = tags
        self.material_specs = dict(material_specs or {})
        """Material code -> tolerance from the approved specification; overrides the recipe's tolerance."""
        self._idle = set(config.idle_values)
        watched = {config.batch_tag, config.product_tag, config.recipe_tag, config.recipe_version_tag,
                   config.phase_tag}
        for m in config.materials:
            watched |= {m.trigger, m.material, m.lot, m.target, m.actual, m.scale, m.operator, m.tolerance}
        for q in config.qc:
            watched |= {q.trigger, q.sample, *q.tests.values()}
        self._watched = {t for t in watched if t is not None}
        self._pick = TagPicker(self._watched)
        self.restore(state or {})

    def state(self) -> dict[str, Any]:
        """What must survive a restart, saved in the same transaction as the events it produced."""
        c = self.context
        return {"context": {"batch": c.batch, "product": c.product, "recipe": c.recipe,
                            "recipe_version": c.recipe_version, "phase": c.phase},
                "triggers": dict(self._triggers), "latest": dict(self.latest),
                "batch_id": self._batch_id, "ended": dict(self._ended)}

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a state from :meth:`state` (a change that could not be committed is undone)."""
        self.latest: dict[str, Value] = dict(state.get("latest", {}))
        self.context = Context(**state.get("context", {}))
        self._triggers: dict[str, Value] = dict(state.get("triggers", {}))
        self._batch_id: str | None = state.get("batch_id", self.context.batch)
        """The active batch's id as the PLC or operator gave it (the context's batch may carry ``#n``)."""
        self._ended: dict[str, int] = dict(state.get("ended", {}))
        """Recently ended batch ids and how many times each has run, oldest first."""

    # -- occurrences of a batch id -----------------------------------------------------------

    def _starting(self, batch_id: str) -> tuple[str, list[EventDraft]]:
        """The context batch for a batch id that starts, and a ``batch.id_reused`` event if it ran before."""
        self._batch_id = batch_id
        before = self._ended.get(batch_id)
        if before is None:
            return batch_id, []
        occurrence = before + 1
        label = f"{batch_id}{OCCURRENCE_MARK}{occurrence}"
        return label, [EventDraft("batch.id_reused", label, {
            "batch": label, "batch_id": batch_id, "occurrence": occurrence,
            "reason": f"batch id {batch_id} already ran and ended {before} time(s); this run is recorded as "
                      f"{label}"})]

    def _ending(self) -> None:
        if self._batch_id is None:
            return
        label = self.context.batch or ""
        occurrence = int(label.rpartition(OCCURRENCE_MARK)[2]) if label != self._batch_id else 1
        self._ended.pop(self._batch_id, None)  # re-inserted as the newest
        self._ended[self._batch_id] = occurrence
        while len(self._ended) > REMEMBERED_BATCHES:
            del self._ended[next(iter(self._ended))]
        self._batch_id = None

    # -- operator commands -------------------------------------------------------------------

    def start_batch(self, batch: str, product: str, recipe: str | None, recipe_version: str | None,
                    phase: str | None, operator: str) -> list[EventDraft]:
        """An operator starts a production batch (only where no batch tag is configured)."""
        self._operator_may("batch", self.config.batch_tag)
        if phase is not None:
            self._operator_may("phase", self.config.phase_tag)
        batch = self._text("batch", batch)
        product = self._text("product", product)
        recipe = None if recipe is None else self._text("recipe", recipe)
        recipe_version = None if recipe_version is None else self._text("recipe version", recipe_version)
        phase = None if phase is None else self._text("phase", phase)
        if self.context.batch is not None:
            raise ContextError(f"batch {self.context.batch} is active: end it first (blackbox batch end)")
        label, events = self._starting(batch)
        self.context = Context(batch=label, product=product, recipe=recipe, recipe_version=recipe_version)
        events.append(EventDraft("batch.started", label, {"batch": label, "product": product, "recipe": recipe,
                                                          "recipe_version": recipe_version, "operator": operator,
                                                          **self._occurrence(label)}))
        if phase is not None:
            events += self.set_phase(phase, operator)
        return events

    def set_phase(self, phase: str, operator: str) -> list[EventDraft]:
        """An operator moves the active batch to another phase (only where no phase tag is configured)."""
        self._operator_may("phase", self.config.phase_tag)
        phase = self._text("phase", phase)
        old = self.context
        if old.batch is None:
            raise ContextError("no batch is active: start one first (blackbox batch start)")
        if old.phase == phase:
            raise ContextError(f"batch {old.batch} is already in phase {phase}")
        self.context = Context(old.batch, old.product, old.recipe, old.recipe_version, phase)
        return [EventDraft("batch.phase", old.batch, {"batch": old.batch, "phase": phase, "previous": old.phase,
                                                       "operator": operator})]

    def end_batch(self, operator: str) -> list[EventDraft]:
        """An operator ends the active batch (only where no batch tag is configured)."""
        self._operator_may("batch", self.config.batch_tag)
        old = self.context
        if old.batch is None:
            raise ContextError("no batch is active")
        self._ending()
        self.context = Context()
        return [EventDraft("batch.ended", old.batch, {"batch": old.batch, "last_phase": old.phase,
                                                       "operator": operator}, context=old)]

    @staticmethod
    def _operator_may(what: str, tag: str | None) -> None:
        if tag is not None:
            raise ContextError(f"the {what} comes from PLC tag {tag} (context.{what}_tag); an operator command "
                               f"would contradict it")

    def _text(self, what: str, value: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ContextError(f"{what} must be a non-empty text")
        if value != value.strip() or len(value) > MAX_CONTEXT_TEXT or not value.isprintable():
            raise ContextError(f"{what} {value!r} must be printable, without surrounding spaces, at most "
                               f"{MAX_CONTEXT_TEXT} characters")
        if value in self._idle:
            raise ContextError(f"{what} {value!r} is one of context.idle_values, which mean 'no batch'")
        return value

    def observe(self, samples: Sequence[Sample]) -> list[EventDraft]:
        """Take one cycle's samples; return the context events they cause, in order."""
        changed = False
        for s in self._pick(samples):
            if s.quality is Quality.GOOD and self.latest.get(s.tag) != s.value:
                self.latest[s.tag] = s.value
                changed = True
        if not changed:
            return []
        events = self._context_events()
        for m in self.config.materials:
            events.extend(self._fire(m.trigger, functools.partial(self._material, m)))
        for q in self.config.qc:
            events.extend(self._fire(q.trigger, functools.partial(self._qc, q)))
        return events

    # -- batch and phase ---------------------------------------------------------------------

    def _value(self, tag: str | None) -> str | None:
        if tag is None or self.latest.get(tag) is None:
            return None
        text = str(self.latest[tag]).strip()
        return None if text in self._idle else text

    def _context_events(self) -> list[EventDraft]:
        cfg = self.config
        old = self.context
        batch = self._value(cfg.batch_tag) if cfg.batch_tag else old.batch
        starts = cfg.batch_tag is not None and batch is not None and (old.batch is None or batch != self._batch_id)
        if cfg.batch_tag and batch is not None and not starts:
            batch = old.batch  # the same run: keep its #n
        new = Context(batch=batch,
                      product=self._value(cfg.product_tag) if cfg.product_tag else old.product,
                      recipe=self._value(cfg.recipe_tag) if cfg.recipe_tag else old.recipe,
                      recipe_version=self._value(cfg.recipe_version_tag) if cfg.recipe_version_tag
                      else old.recipe_version,
                      phase=(self._value(cfg.phase_tag) if cfg.phase_tag else old.phase) if batch else None)
        if new == old and not starts:
            return []
        events: list[EventDraft] = []
        if old.batch and (starts or new.batch is None):
            # the end is recorded while the old batch is still the context
            events.append(EventDraft("batch.ended", old.batch, {"batch": old.batch, "last_phase": old.phase},
                                     context=old))
            self._ending()
        if starts and new.batch is not None:
            label, reused = self._starting(new.batch)
            new = Context(label, new.product, new.recipe, new.recipe_version, new.phase)
            events.extend(reused)
        self.context = new
        if starts and new.batch:
            events.append(EventDraft("batch.started", new.batch, {
                "batch": new.batch, "product": new.product, "recipe": new.recipe,
                "recipe_version": new.recipe_version, **self._occurrence(new.batch)}))
        # a batch that starts in the phase the last one ended in still gets its phase event
        if new.batch and (new.phase != old.phase or (starts and new.phase is not None)):
            events.append(EventDraft("batch.phase", new.batch, {
                "batch": new.batch, "phase": new.phase,
                "previous": old.phase if old.batch == new.batch else None}))
        return events

    def _occurrence(self, label: str) -> dict[str, Any]:
        """``batch_id`` and ``occurrence`` for a batch id's second and later runs (nothing for the first)."""
        if self._batch_id is None or label == self._batch_id:
            return {}
        return {"batch_id": self._batch_id, "occurrence": int(label.rpartition(OCCURRENCE_MARK)[2])}

    # -- triggered records -------------------------------------------------------------------

    def _fire(self, trigger: str, build: Callable[[], list[EventDraft]]) -> list[EventDraft]:
        """An event when ``trigger`` changed since last seen; the first sighting only sets a baseline."""
        value = self.latest.get(trigger)
        if value is None or self._triggers.get(trigger) == value:
            return []
        first = trigger not in self._triggers
        self._triggers[trigger] = value
        return [] if first else build()

    def _material(self, m: MaterialTrigger) -> list[EventDraft]:
        target, actual = _num(self.latest.get(m.target)), _num(self.latest.get(m.actual))
        tolerance = _num(self.latest.get(m.tolerance)) if m.tolerance else None
        tol_pct = m.tolerance_pct
        material = _text(self.latest.get(m.material))
        spec = self.material_specs.get(material) if material is not None else None
        if spec is not None:
            tolerance, tol_pct = spec.tolerance, spec.tolerance_pct
        if tolerance is not None and target:
            tol_pct = abs(tolerance / target) * 100
        elif tol_pct is not None and target:
            tolerance = abs(target) * tol_pct / 100
        in_tol = None if tolerance is None or target is None or actual is None else (
            abs(actual - target) <= tolerance + 1e-9)
        return [EventDraft("material.consumed", material, {
            "material": material, "lot": _text(self.latest.get(m.lot)), "target": target, "actual": actual,
            "eng_unit": self.tags[m.actual].eng_unit, "scale": _text(self.latest.get(m.scale)) if m.scale else None,
            "operator": _text(self.latest.get(m.operator)) if m.operator else None,
            "tolerance": tolerance, "tolerance_pct": tol_pct, "in_tolerance": in_tol,
            "performed_by": {"source": "plc", "tag": m.actual, "signed_by": "gateway key"}})]

    def _qc(self, q: QcTrigger) -> list[EventDraft]:
        """One ``qc.result`` per test, judged against the limits in force for the tag."""
        sample = _text(self.latest.get(q.sample))
        out = []
        for test, tag in q.tests.items():
            value = _num(self.latest.get(tag))
            limits = self.tags[tag].limits_for(self.context.phase, self.context.product)
            low = None if limits is None else (limits.l if limits.l is not None else limits.ll)
            high = None if limits is None else (limits.h if limits.h is not None else limits.hh)
            passed = None if value is None or limits is None else (
                (low is None or value >= low) and (high is None or value <= high))
            out.append(EventDraft("qc.result", tag, {
                "test": test, "value": value, "eng_unit": self.tags[tag].eng_unit, "spec_low": low,
                "spec_high": high, "pass": passed, "sample": sample}))
        return out


def _num(v: Value) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _text(v: Value) -> str | None:
    return None if v is None else str(v).strip()
