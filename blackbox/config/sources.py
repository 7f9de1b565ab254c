"""The ``sources:`` section: what every source and tag has, and a tag's limit sets.

Drivers subclass :class:`SourceConfig` and :class:`TagConfig` with their protocol's settings (see
:mod:`drivers`); the loader validates each source against its driver's model.
"""

from __future__ import annotations

import itertools

from pydantic import ConfigDict, Field, model_validator

from blackbox.config.base import Identifier, Strict
from blackbox.model import Category
from blackbox.seal import limits as limit_rule


class LimitSet(Strict):
    """Limits of one tag; ``phases``/``products`` restrict where they are in force (empty = everywhere)."""

    phases: list[str] = Field(default_factory=list)
    products: list[str] = Field(default_factory=list)
    ll: float | None = None
    l: float | None = None  # noqa: E741 - the ISA name of the low limit
    h: float | None = None
    hh: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LimitSet:
        present = [(n, v) for n, v in (("ll", self.ll), ("l", self.l), ("h", self.h), ("hh", self.hh)) if v is not None]
        if not present:
            raise ValueError("a limit set needs at least one of ll, l, h, hh")
        for (n1, v1), (n2, v2) in itertools.pairwise(present):
            if v1 > v2:
                raise ValueError(f"limits out of order: {n1}={v1} is above {n2}={v2}")
        return self

    def applies(self, phase: str | None, product: str | None) -> bool:
        return limit_rule.applies(self, phase, product)

    def specificity(self) -> int:
        return limit_rule.specificity(self)


class TagConfig(Strict):
    """What every tag has; drivers extend it with addressing details."""

    name: Identifier = Field(description="Tag name, unique on the gateway, e.g. EM-01.temperature.")
    address: str = Field(min_length=1, description="Protocol address (see the driver's reference).")
    type: str = Field(description="Data type, as the driver names it.")
    category: Category
    unit: str = Field(min_length=1, description="Equipment the tag belongs to, e.g. EM-01.")
    eng_unit: str = Field(default="", description="Engineering unit, e.g. degC, MPa, rpm.")
    description: str = ""
    limits: list[LimitSet] = Field(default_factory=list)
    deadband: float | None = Field(
        default=None, ge=0, allow_inf_nan=False,
        description="Report by exception: record a reading only when it moved more than this (engineering "
        "units; any change of text or flags) from the last one recorded, its quality changed, or heartbeat "
        "passed. Omit to record every reading.")
    heartbeat: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Seconds after which an unchanged value is recorded again, so that 'unchanged' and 'not "
        "read' stay distinguishable; 60 when a deadband is set. Also repeats subscribed values.")

    def limits_for(self, phase: str | None, product: str | None) -> LimitSet | None:
        """The most specific limit set in force for this phase and product, if any."""
        return limit_rule.most_specific(self.limits, phase, product)


class SourceConfig(Strict):
    """What every source has. Drivers subclass it (and its tag model) with protocol settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Identifier
    protocol: str = Field(description="Driver name: opcua, modbus, or one registered by a plugin.")
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between polls.")
    timeout: float = Field(default=2.0, gt=0, description="Seconds before a request counts as failed.")
    reconnect_min: float = Field(default=0.5, gt=0, description="First reconnect delay, seconds.")
    reconnect_max: float = Field(default=5.0, gt=0, description="Longest reconnect delay, seconds: a PLC that "
                                 "comes back after a restart is reconnected within about this (x1.2 jitter).")
    tags: list[TagConfig] = Field(default_factory=list)
