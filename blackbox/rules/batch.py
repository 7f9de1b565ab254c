"""Per-batch summary rules: a phase's duration, or a tag's peak or minimum in it, against history.

When the measured phase of a batch ends, its figure is compared with the same figure of the last
``batches`` batches of the same product: it deviates when it is further from their mean than
``k`` of their standard deviations (sample standard deviation) and than ``min_deviation``. No
verdict is given before ``min_batches`` batches of history exist. The figure then joins the
history, deviating or not ("X against the last N batches", SPEC §10 question 10).

A deviation stays active until the next batch starts: it describes the batch, not the moment.
Phases are followed through the record's ``batch.*`` events, so a phase counts only if its start
was seen; the history and the phase in progress survive a restart (they are in the saved state).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from blackbox.config.rules import BatchRule
from blackbox.model import EventDraft, Sample
from blackbox.rules.base import US, Monitor, Verdict, numeric


class BatchMonitor(Monitor):
    rule: BatchRule

    def __init__(self, rule: BatchRule) -> None:
        super().__init__(rule)
        self._history: dict[str, list[float]] = {}
        self._batch: str | None = None
        self._started_us: int | None = None  # the measured phase is in progress since then
        self._extreme: float | None = None

    def event(self, draft: EventDraft, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        if not draft.type.startswith("batch."):
            return None
        data: Mapping[str, Any] = draft.data
        at = draft.ts_us if draft.ts_us is not None else ts_us
        verdict = None
        if draft.type == "batch.started":
            self._batch, self._started_us = data.get("batch"), None
            return self.report(None)
        ended = data.get("previous") if draft.type == "batch.phase" else data.get("last_phase")
        if ended == self.rule.phase and self._started_us is not None:
            verdict = self._finish(at, self._product_of(draft) or product)
        if draft.type == "batch.phase" and data.get("phase") == self.rule.phase:
            self._batch = data.get("batch", self._batch)
            self._started_us, self._extreme = at, None
        return verdict

    @staticmethod
    def _product_of(draft: EventDraft) -> str | None:
        return draft.context.product if draft.context is not None else None

    def observe(self, sample: Sample, ts_us: int, phase: str | None, product: str | None) -> Verdict | None:
        if self._started_us is None or phase != self.rule.phase:
            return None
        x = numeric(sample)
        if x is None:
            return None
        if self._extreme is None:
            self._extreme = x
        elif self.rule.measure == "peak":
            self._extreme = max(self._extreme, x)
        else:
            self._extreme = min(self._extreme, x)
        return None

    def _finish(self, ts_us: int, product: str | None) -> Verdict | None:
        if self._started_us is None:
            raise RuntimeError("internal error: expected self._started_us is not None")
        x = (ts_us - self._started_us) / US if self.rule.measure == "duration" else self._extreme
        self._started_us, self._extreme = None, None
        if x is None:
            return None  # no reading of the tag in the phase: nothing to compare
        history = self._history.setdefault(product or "", [])
        verdict = None
        if len(history) >= self.rule.min_batches:
            mean, sd = statistics.fmean(history), statistics.stdev(history)
            allowed = max(self.rule.k * sd, self.rule.min_deviation)
            high, low = ("long", "short") if self.rule.measure == "duration" else ("high", "low")
            level = high if x > mean + allowed else low if x < mean - allowed else None
            if level is not None:
                verdict = self.report(level, x, mean + allowed if level == high else mean - allowed,
                                      batch=self._batch, product=product, mean=round(mean, 6), sd=round(sd, 6),
                                      batches=len(history))
        history.append(x)
        del history[:-self.rule.batches]
        return verdict

    def reset(self) -> None:
        super().reset()
        self._started_us, self._extreme = None, None

    def changing(self) -> bool:
        return self.level is not None or self._started_us is not None  # the phase's extreme follows readings

    def state(self) -> dict[str, Any] | None:
        return {"history": self._history, "batch": self._batch, "started_us": self._started_us,
                "extreme": self._extreme}

    def restore(self, state: dict[str, Any]) -> None:
        self._history = {k: [float(x) for x in v] for k, v in state["history"].items()}
        self._batch, self._started_us, self._extreme = state["batch"], state["started_us"], state["extreme"]
