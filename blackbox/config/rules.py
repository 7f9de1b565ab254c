"""The ``rules:`` section: one model per rule type (docs/rules.md), joined in the :data:`Rule` union."""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, model_validator

from blackbox.config.base import Identifier, Seconds, Strict

Priority = Literal["low", "medium", "high", "critical"]
SpcCheck = Literal["we1", "we2", "we3", "we4", "nelson1", "nelson2", "nelson3", "nelson4", "nelson5", "nelson6",
                   "nelson7", "nelson8"]
LimitName = Literal["hh", "h", "l", "ll"]


def _high_and_low() -> list[LimitName]:
    return ["h", "l"]


def _western_electric() -> list[SpcCheck]:
    return ["we1", "we2", "we3", "we4"]


class TagCondition(Strict):
    """A condition on the latest good value of a tag, e.g. ``{tag: FL-01.running, equals: true}``."""

    tag: str
    equals: bool | float | str | None = Field(default=None, description="Holds while the value equals this.")
    above: float | None = Field(default=None, description="Holds while the value is above this.")
    below: float | None = Field(default=None, description="Holds while the value is below this.")

    @model_validator(mode="after")
    def _something(self) -> TagCondition:
        if self.equals is None and self.above is None and self.below is None:
            raise ValueError("a condition needs equals, above or below")
        return self


class RuleBase(Strict):
    """What every rule has: identity, priority, where it runs and when it is suppressed by design."""

    id: Identifier | None = Field(default=None, description="Alarm id, unique on the gateway; default "
                                  "'<type>:<tag>' (operators ack and shelve by it).")
    priority: Priority = Field(default="medium", description="Alarm priority: low, medium, high or critical.")
    phases: list[str] = Field(default_factory=list, description="Phases the rule runs in (empty: every phase).")
    products: list[str] = Field(default_factory=list, description="Products the rule runs for (empty: all).")
    when: TagCondition | None = Field(default=None, description="The rule runs only while this holds, "
                                      "e.g. {tag: FL-01.running, equals: true}.")
    suppress_in: list[str] = Field(default_factory=list, description="Phases in which the alarm is suppressed "
                                   "by design, e.g. [cip]: still evaluated and recorded, not annunciated.")
    suppress_when: TagCondition | None = Field(default=None, description="Suppressed by design while this "
                                               "holds, e.g. {tag: EM-01.cip_active, equals: true}.")

    @abstractmethod
    def subject(self) -> str:
        """What the alarm is about (a tag, a source, a phase)."""

    def alarm_id(self) -> str:
        type_ = type(self).model_fields["type"].default
        return self.id or f"{type_}:{self.subject()}"

    def condition_tags(self) -> set[str]:
        """Tags this rule reads besides the one it judges."""
        return {c.tag for c in (self.when, self.suppress_when) if c is not None}


class TagRule(RuleBase):
    tag: str = Field(description="The tag the rule judges.")

    def subject(self) -> str:
        return self.tag


class ThresholdRule(TagRule):
    """HH/H/L/LL limits of the tag (the limit set in force for the phase and product)."""

    type: Literal["threshold"] = "threshold"
    deadband: float = Field(default=0.0, ge=0, description="Hysteresis, in engineering units.")
    on_delay: Seconds = Field(default=0.0, description="Seconds the condition must hold to raise.")
    off_delay: Seconds = Field(default=0.0, description="Seconds the return must hold to clear.")


class RateOfChangeRule(TagRule):
    """The value moves faster than allowed, fitted over a window (e.g. cooling <= 1.5 degC/min)."""

    type: Literal["rate_of_change"] = "rate_of_change"
    max_rise: float | None = Field(default=None, gt=0, description="Largest allowed rise, units per minute.")
    max_fall: float | None = Field(default=None, gt=0, description="Largest allowed fall, units per minute.")
    window: Seconds = Field(default=60.0, description="Seconds of readings the rate is fitted over (the "
                            "slope of their least-squares line; at least the previous reading).")

    @model_validator(mode="after")
    def _a_limit(self) -> RateOfChangeRule:
        if self.max_rise is None and self.max_fall is None:
            raise ValueError("a rate_of_change rule needs max_rise, max_fall or both")
        return self


class FrozenRule(TagRule):
    """The value does not move for N readings where it should (a hung transmitter)."""

    type: Literal["frozen"] = "frozen"
    samples: int = Field(ge=2, description="Consecutive good readings within `tolerance` of each other that "
                         "make the value frozen.")
    tolerance: float = Field(default=0.0, ge=0, description="Movement that still counts as no change.")


class StaleRule(TagRule):
    """No reading of the tag for N intervals (checked every second by the agent)."""

    type: Literal["stale"] = "stale"
    intervals: int = Field(default=3, ge=1, description="Missing intervals that make the tag stale.")
    interval: float | None = Field(default=None, gt=0, description="Expected seconds between readings; "
                                   "default: learned, the median spacing of the last readings.")


class BadQualityRule(TagRule):
    """The source reports the tag with bad quality (NaN and conversion errors are bad readings too)."""

    type: Literal["bad_quality"] = "bad_quality"
    samples: int = Field(default=1, ge=1, description="Consecutive bad readings before it raises.")
    include_uncertain: bool = Field(default=False, description="Count uncertain readings as bad.")


class DisconnectedRule(RuleBase):
    """A source is disconnected (the agent's source.disconnected / source.connected events)."""

    type: Literal["disconnected"] = "disconnected"
    source: str = Field(description="Source name, as in sources[].name.")
    on_delay: Seconds = Field(default=0.0, description="Seconds the source must stay away before it raises.")

    def subject(self) -> str:
        return self.source


class TrendRule(TagRule):
    """A regression over a moving window predicts when a limit in force will be crossed; warns within horizon."""

    type: Literal["trend"] = "trend"
    window: float = Field(default=300.0, gt=0, description="Seconds of readings the regression fits.")
    min_samples: int = Field(default=10, ge=3, description="Readings needed in the window before predicting; "
                             "the window restarts when the limits in force change (a new phase).")
    horizon: float = Field(default=600.0, gt=0, description="Warn when the predicted crossing is this many "
                           "seconds away or less.")
    levels: list[LimitName] = Field(default_factory=_high_and_low, min_length=1,
                                    description="Limits of the tag to predict crossings of.")
    hysteresis: float = Field(default=0.2, ge=0, description="The warning clears once the predicted crossing "
                              "is more than horizon x (1 + hysteresis) away.")


class ControlRule(TagRule):
    """Rules against a tag's control limits: a centre and sigma, configured or learned."""

    centre: float | None = Field(default=None, description="Centre line; learned when omitted.")
    sigma: float | None = Field(default=None, gt=0, description="Standard deviation of one point; learned "
                                "(average moving range / 1.128) when omitted.")
    reference_samples: int | None = Field(default=None, ge=2, description="Points of the reference period "
                                          "that centre and sigma are learned from.")
    relearn: bool = Field(default=False, description="Learn again each time the rule comes into force "
                          "(a new phase or batch) instead of once.")
    sample_on: str | None = Field(default=None, description="Take a point only when this tag changes (a new "
                                  "jar, a new QC sample), not at every poll.")

    @model_validator(mode="after")
    def _baseline(self) -> ControlRule:
        if (self.centre is None or self.sigma is None) and self.reference_samples is None:
            raise ValueError("give centre and sigma, or reference_samples to learn what is missing")
        return self

    def condition_tags(self) -> set[str]:
        return super().condition_tags() | ({self.sample_on} if self.sample_on else set())


class SpcRule(ControlRule):
    """Western Electric and Nelson run rules on the points' distance from the centre in sigmas."""

    type: Literal["spc"] = "spc"
    checks: list[SpcCheck] = Field(default_factory=_western_electric, min_length=1,
                                   description="Run rules to apply: we1..we4 (Western Electric), "
                                   "nelson1..nelson8.")
    clear_after: int = Field(default=1, ge=1, description="Points without any violation before it clears.")


class EwmaRule(ControlRule):
    """Exponentially weighted moving average with limits centre +/- L sigma sqrt(lam/(2-lam)(1-(1-lam)^2i))."""

    type: Literal["ewma"] = "ewma"
    lam: float = Field(default=0.2, gt=0, le=1, description="Weight of the newest point (lambda).")
    L: float = Field(default=3.0, gt=0, description="Width of the control limits, in sigmas of the EWMA.")
    sides: Literal["both", "high", "low"] = "both"


class CusumRule(ControlRule):
    """Tabular CUSUM: C+ = max(0, C+ + x - centre - k sigma), C- likewise; alarm above h sigma."""

    type: Literal["cusum"] = "cusum"
    k: float = Field(default=0.5, ge=0, description="Allowance (slack), in sigmas.")
    h: float = Field(default=5.0, gt=0, description="Decision interval, in sigmas.")
    sides: Literal["both", "high", "low"] = "both"


class BatchRule(RuleBase):
    """A batch's phase duration, or the peak/minimum of a tag in a phase, against the last N batches."""

    type: Literal["batch"] = "batch"
    measure: Literal["duration", "peak", "minimum"]
    phase: str = Field(description="The phase measured.")
    tag: str | None = Field(default=None, description="The tag whose peak or minimum is measured.")
    batches: int = Field(default=10, ge=2, description="Compared with the last this many batches of the product.")
    min_batches: int = Field(default=3, ge=2, description="Batches of history needed before judging.")
    k: float = Field(default=3.0, gt=0, description="Allowed deviation from their mean, in their standard "
                     "deviations (but at least min_deviation).")
    min_deviation: float = Field(default=0.0, ge=0, description="Smallest allowed deviation (seconds for a "
                                 "duration, engineering units otherwise), for histories that barely vary.")

    @model_validator(mode="after")
    def _tag_for_values(self) -> BatchRule:
        if self.measure != "duration" and self.tag is None:
            raise ValueError(f"measure {self.measure!r} needs a tag")
        if self.measure == "duration" and self.tag is not None:
            raise ValueError("a duration is measured without a tag")
        if self.min_batches > self.batches:
            raise ValueError("min_batches cannot exceed batches")
        if self.phases:
            raise ValueError("a batch rule measures its own phase: restrict it with products, not phases")
        return self

    def subject(self) -> str:
        return f"{self.phase}.{self.measure}" if self.tag is None else f"{self.tag}.{self.phase}.{self.measure}"


RULE_MODELS: tuple[type[RuleBase], ...] = (ThresholdRule, RateOfChangeRule, FrozenRule, StaleRule, BadQualityRule,
                                          DisconnectedRule, TrendRule, SpcRule, EwmaRule, CusumRule, BatchRule)
Rule = Annotated[ThresholdRule | RateOfChangeRule | FrozenRule | StaleRule | BadQualityRule | DisconnectedRule
                 | TrendRule | SpcRule | EwmaRule | CusumRule | BatchRule, Field(discriminator="type")]
LIMIT_RULES = ("threshold", "trend")
"""Rule types that judge a tag against its configured limits."""
RESERVED_ALARM_IDS = frozenset({"buffer.data_loss", "uplink.bad_receipt", "uplink.log_inconsistent"})
"""Alarm ids of the agent's own alarms (:mod:`blackbox.agent.system_alarms`), which no rule may take."""
RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
