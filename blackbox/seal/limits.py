"""Limit sets as the chain records them, and the rule that picks the one in force.

A ``config.applied`` event carries each tag's ``limits``: a list of ``{"phases": [...],
"products": [...], "ll", "l", "h", "hh"}``. That is a *record*: once sealed it never changes,
while the agent's configuration model (``blackbox.config.LimitSet``) may grow stricter. So
whoever reads historical records (the store's trace) reads limit sets through
:func:`recorded_limit_set`, which accepts any set the record format allows, and never through the
current configuration model: a set that a newer agent would refuse is still shown as it was
applied.

:func:`most_specific` is the one rule choosing the set in force for a phase and product, used by
the agent's configuration (``TagConfig.limits_for``) and the trace alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

LIMIT_NAMES = ("ll", "l", "h", "hh")


class Scoped(Protocol):
    """Anything restricted to phases and products (empty: everywhere)."""

    @property
    def phases(self) -> Sequence[str]: ...

    @property
    def products(self) -> Sequence[str]: ...


S = TypeVar("S", bound=Scoped)


def applies(scope: Scoped, phase: str | None, product: str | None) -> bool:
    """The set is in force in this phase for this product (the same scope rule the rule engine uses for rules)."""
    return (not scope.phases or phase in scope.phases) and (not scope.products or product in scope.products)


def specificity(scope: Scoped) -> int:
    """How specific a set is: a phase restriction outranks a product restriction, both outrank none."""
    return (2 if scope.phases else 0) + (1 if scope.products else 0)


def most_specific(sets: Iterable[S], phase: str | None, product: str | None) -> S | None:
    """The most specific set in force for this phase and product (the first of equals), if any."""
    candidates = [s for s in sets if applies(s, phase, product)]
    return max(candidates, key=specificity) if candidates else None


@dataclass(frozen=True, slots=True)
class RecordedLimitSet:
    """One limit set as a ``config.applied`` event recorded it (format version 1 and later)."""

    phases: tuple[str, ...]
    products: tuple[str, ...]
    ll: float | None
    l: float | None  # noqa: E741 - the ISA name of the low limit
    h: float | None
    hh: float | None


def recorded_limit_set(raw: Any) -> RecordedLimitSet:
    """Read one recorded limit set; :class:`ValueError` (saying why) if it cannot be read or holds no limit.

    No other rule of the current configuration model is applied (the order of the limits, for
    one): the record says what the gateway applied, and that is what a trace shows.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"a limit set must be an object, not {type(raw).__name__}")
    scopes: list[tuple[str, ...]] = []
    for key in ("phases", "products"):
        value = raw.get(key)
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} must be a list of names, not {value!r}")
        scopes.append(tuple(value))
    limits: list[float | None] = []
    for key in LIMIT_NAMES:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise ValueError(f"{key} must be a number, not {value!r}")
        limits.append(None if value is None else float(value))
    if all(v is None for v in limits):
        raise ValueError("it holds none of ll, l, h, hh")
    return RecordedLimitSet(scopes[0], scopes[1], *limits)
