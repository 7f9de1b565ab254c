"""Specification documents as the store keeps them: the record format, read tolerantly.

A specification approved by the factory QA and the regulator reaches the store in a
``spec.applied`` event (or ``blackbox store spec add``) and is kept as the exact document that was
signed. That document is a *record*: once signed it never changes, while the agent's
specification model (``blackbox.spec.model.Specification``) may grow stricter or drop a field. So
whoever reads kept specifications (the store's trace, pages, retention, ``store spec list``) reads
them through :func:`recorded_spec`, never through the current model: a document that a newer
agent would refuse is still shown, with its approval, as it was approved.

Format 1 is every document the specification model has written so far (it has no ``format``
key). Only what the store uses is read: ``id``, ``product``, ``version``, ``reason``, the limit
sets under ``parameters`` (:func:`blackbox.seal.limits.recorded_limit_set`), the ``qc`` tests and
``retention``. Any other field (rules, materials, a field a later or earlier model has) is kept in
the document and not judged here. A later format that changes the meaning of a field must write a
``format`` key and get its own reading here; a format this reader does not know is an error (the
store reports the document as unreadable rather than guess).

Approval does not depend on this reader: the signatures are verified over the canonical bytes of
the exact stored document (:mod:`blackbox.spec.approval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from blackbox.seal.limits import RecordedLimitSet, recorded_limit_set

SPEC_RECORD_FORMATS = (1,)
"""The record formats of specification documents this reader knows."""


class SpecRecordError(ValueError):
    """A kept specification document that cannot be read at all; the message says why."""


@dataclass(frozen=True, slots=True)
class RecordedQcTest:
    """A QC test the specification requires before release, with its range (``None``: the analyst's verdict)."""

    test: str
    low: float | None
    high: float | None
    eng_unit: str | None


@dataclass(frozen=True, slots=True)
class RecordedRetention:
    """How long the records of a batch of the product are kept."""

    shelf_life_months: int
    years_after_expiry: float


@dataclass(frozen=True)
class RecordedSpec:
    """The parts of a kept specification document the store uses."""

    id: str
    product: str
    version: int
    reason: str
    parameters: dict[str, tuple[RecordedLimitSet, ...]]
    qc: tuple[RecordedQcTest, ...]
    retention: RecordedRetention | None
    format: int

    def ref(self) -> str:
        return f"{self.id} v{self.version}"


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecRecordError(f"{what} must be a number, not {value!r}")
    return float(value)


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise SpecRecordError(f"{key} must be a non-empty text, not {value!r}")
    return value


def _parameters(raw: Any) -> dict[str, tuple[RecordedLimitSet, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecRecordError(f"parameters must be a mapping of tag to limit sets, not {type(raw).__name__}")
    out: dict[str, tuple[RecordedLimitSet, ...]] = {}
    for tag, sets in raw.items():
        if not isinstance(sets, list):
            raise SpecRecordError(f"parameters.{tag} must be a list of limit sets")
        read = []
        for i, s in enumerate(sets):
            try:
                read.append(recorded_limit_set(s))
            except ValueError as exc:
                raise SpecRecordError(f"parameters.{tag}[{i}]: {exc}") from None
        out[str(tag)] = tuple(read)
    return out


def _qc(raw: Any) -> tuple[RecordedQcTest, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecRecordError("qc must be a list of tests")
    out = []
    for i, q in enumerate(raw):
        if not isinstance(q, dict):
            raise SpecRecordError(f"qc[{i}] must be an object")
        test = _text(q, "test")
        unit = q.get("eng_unit")
        out.append(RecordedQcTest(test=str(test), low=_number(q.get("low"), f"qc[{i}].low"),
                                  high=_number(q.get("high"), f"qc[{i}].high"),
                                  eng_unit=None if unit is None else str(unit)))
    return tuple(out)


def _retention(raw: Any) -> RecordedRetention | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecRecordError("retention must be an object")
    months = raw.get("shelf_life_months")
    if isinstance(months, bool) or not isinstance(months, int):
        raise SpecRecordError(f"retention.shelf_life_months must be a whole number, not {months!r}")
    years = _number(raw.get("years_after_expiry", 1.0), "retention.years_after_expiry")
    return RecordedRetention(months, 1.0 if years is None else years)


def recorded_spec(data: Any) -> RecordedSpec:
    """Read a kept specification document; :class:`SpecRecordError` (saying why) if it cannot be read.

    Fields this reader does not use are neither read nor refused; no rule of the current
    specification model is applied (the order of the limits, unknown fields, the rules' types).
    """
    if not isinstance(data, dict):
        raise SpecRecordError(f"a specification must be a mapping, not {type(data).__name__}")
    fmt = data.get("format", 1)
    if fmt not in SPEC_RECORD_FORMATS or isinstance(fmt, bool):
        raise SpecRecordError(f"format {fmt!r} is not a specification record format this store reads "
                              f"({', '.join(map(str, SPEC_RECORD_FORMATS))})")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise SpecRecordError(f"version must be a whole number, not {version!r}")
    return RecordedSpec(id=str(_text(data, "id")), product=str(_text(data, "product")), version=version,
                        reason=_text(data, "reason", required=False) or "",
                        parameters=_parameters(data.get("parameters")), qc=_qc(data.get("qc")),
                        retention=_retention(data.get("retention")), format=fmt)
