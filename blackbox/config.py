"""Configuration: pydantic models and a loader that reports every error with file, path and line.

Sources are protocol-specific: the base :class:`SourceConfig` holds what every source has, and
each driver registers its own subclass (see :mod:`drivers`). The loader validates the common part
first, then each source against its driver's model, and collects every error before raising.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from blackbox.model import Category
from blackbox.seal import limits as limit_rule
from blackbox.tlog.note import NoteError, parse_vkey


def known_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone this machine knows (``Asia/Shanghai``), else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)") from exc
    return name


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]


class Strict(BaseModel):
    """Base for configuration models: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(Strict):
    id: Identifier = Field(description="Short site id used in MQTT topics and store authorisation, e.g. SH-PD-01.")
    name: str = Field(min_length=1, description="Factory name as registered with the regulator.")
    licence: str = Field(min_length=1, description="Production licence number of the site.")
    line: str = Field(default="L1", min_length=1, description="Production line this gateway records.")
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the site: the store's pages "
                          "show the site's times in it.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return known_timezone(v)


class GatewayConfig(Strict):
    id: Identifier = Field(description="Gateway id, unique within the site; names the MQTT topics.")
    key_file: Path = Field(default=Path("gateway.key"), description="Ed25519 private key (PEM, 0600).")


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


class MaterialTrigger(Strict):
    """A weighing that completes (``trigger`` changes) records a material lot consumed."""

    trigger: str
    material: str
    lot: str
    target: str
    actual: str
    scale: str | None = None
    operator: str | None = None
    tolerance: str | None = Field(default=None, description="Tag with the allowed |actual - target|, in the "
                                  "actual's unit (per material, from the recipe).")
    tolerance_pct: float | None = Field(default=None, ge=0, description="Allowed deviation in % of target, "
                                        "when no tolerance tag is given.")


class QcTrigger(Strict):
    """A new QC sample (``trigger`` changes) records one result per test tag."""

    trigger: str
    sample: str
    tests: dict[str, str] = Field(description="Test name -> tag carrying its value.")


class ContextConfig(Strict):
    """Tags that carry the production context (SPEC §5); absent ones come from operator commands."""

    batch_tag: str | None = None
    product_tag: str | None = None
    recipe_tag: str | None = None
    recipe_version_tag: str | None = None
    phase_tag: str | None = None
    idle_values: list[str] = Field(default_factory=lambda: ["", "idle", "0"])
    materials: list[MaterialTrigger] = Field(default_factory=list)
    qc: list[QcTrigger] = Field(default_factory=list)


# --- rules (SPEC §6; docs/rules.md) ------------------------------------------------------------

Priority = Literal["low", "medium", "high", "critical"]
SpcCheck = Literal["we1", "we2", "we3", "we4", "nelson1", "nelson2", "nelson3", "nelson4", "nelson5", "nelson6",
                   "nelson7", "nelson8"]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
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
RESERVED_ALARM_IDS = frozenset({"buffer.data_loss", "uplink.bad_receipt", "uplink.log_inconsistent"})
"""Alarm ids of the agent's own alarms (:mod:`blackbox.agent.system_alarms`), which no rule may take."""
"""Rule types that judge a tag against its configured limits."""
_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)


class AlarmsConfig(Strict):
    """Alarm management (ISA-18.2): chattering, floods, shelving."""

    chatter_count: int = Field(default=3, ge=2, description="An alarm that starts this many times within "
                               "chatter_window is chattering: it then clears only after chatter_release.")
    chatter_window: float = Field(default=60.0, gt=0, description="Seconds, see chatter_count.")
    chatter_release: Seconds = Field(default=60.0, description="Seconds a chattering alarm's condition must stay "
                                     "normal before it clears.")
    flood_count: int = Field(default=10, ge=1, description="A flood starts when more than this many alarms "
                             "start within flood_window.")
    flood_window: float = Field(default=600.0, gt=0, description="Seconds, see flood_count.")
    flood_end: int = Field(default=5, ge=1, description="The flood ends when fewer than this many alarms "
                           "started within flood_window.")
    max_shelve: float = Field(default=8 * 3600.0, gt=0, description="Longest an operator may shelve an alarm, "
                              "seconds.")

    @model_validator(mode="after")
    def _flood_hysteresis(self) -> AlarmsConfig:
        if self.flood_end > self.flood_count:
            raise ValueError("flood_end cannot exceed flood_count")
        return self


class AgentConfig(Strict):
    """The running agent's local interfaces. Changes here take effect after a restart, not on SIGHUP."""

    control_socket: Path = Field(default=Path("var/agent.sock"),
                                 description="Unix socket for blackbox status, tail, batch, alarms… (mode 0660).")
    metrics_port: int | None = Field(default=None, ge=0, lt=65536,
                                     description="Serve Prometheus metrics (/metrics) and a health check (/health) "
                                                 "on this TCP port; unset: off.")
    metrics_host: str = Field(default="127.0.0.1", min_length=1,
                              description="Address the metrics endpoint listens on.")
    clock_jump_threshold: float = Field(default=1.0, gt=0,
                                        description="Seconds the wall clock may disagree with the monotonic clock "
                                                    "before it counts as a jump (a clock.jump event).")


class QcRequirement(Strict):
    """A QC test a product's batches need before release, with its specification (optional)."""

    test: str = Field(min_length=1, description="Test name, as entered with the result (e.g. pH).")
    low: float | None = Field(default=None, description="Lowest value within specification.")
    high: float | None = Field(default=None, description="Highest value within specification.")


class RecordConfig(Strict):
    """The complete batch record: operator signatures, release, cleaning validity."""

    operators_file: Path = Field(default=Path("var/operators.json"),
                                 description="Operator accounts (hashed passwords, mode 0600). Once it holds an "
                                             "account, every operator entry must be signed.")
    lockout_after: int = Field(default=5, ge=1, description="Wrong passwords in a row that lock an account.")
    verified_weighings: bool = Field(default=True, description="A weighing is complete only once a second person "
                                     "(not the one who weighed) verified it; release waits for it.")
    qc: dict[str, list[QcRequirement]] = Field(default_factory=dict, description="Per product code: the QC tests "
                                               "required before release, with their specifications.")
    units: list[str] = Field(default_factory=list, description="Equipment units a batch on this line uses; their "
                             "cleaning is checked when a batch starts.")
    cleaning_valid_hours: dict[str, float] = Field(default_factory=dict, description="Per unit: hours a cleaning "
                                                   "stays valid (default: cleaning_valid_hours_default).")
    cleaning_valid_hours_default: float = Field(default=72.0, gt=0, description="Hours a cleaning stays valid.")


class BufferConfig(Strict):
    path: Path = Field(default=Path("var/buffer.sqlite"), description="SQLite file of the buffer.")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss, NORMAL only crashes."
    )
    quota_mb: float = Field(default=1024, ge=1, description="Disk quota of the buffer's database file, MB. "
                            "Delivered data is pruned first; only then is the oldest undelivered data dropped, "
                            "recorded as a buffer.gap event and a critical alarm.")
    retention_hours: float = Field(default=24.0, ge=0, description="Hours delivered data is kept for local "
                                   "diagnosis before it is pruned (sooner if the quota needs the space).")


class SealConfig(Strict):
    max_records: int = Field(default=5000, gt=0, description="Records per batch at most.")
    max_bytes: int = Field(default=512_000, gt=1024, description="Bytes of the uncompressed records document "
                           "per batch at most (exact; a single larger record is sealed alone). The MQTT message is "
                           "smaller: compressed, plus a header of about 700 bytes.")
    max_age: float = Field(default=1.0, gt=0, description="Seconds before a partial batch is sealed.")
    compression: Literal["none", "zlib", "zstd"] = Field(default="zstd", description="Payload compression.")
    clock_sync_check: bool = Field(default=True, description="Mark batches 'unsynced' while the kernel reports "
                                   "the clock as not synchronised (no NTP). Steps of the clock are always marked "
                                   "'stepped'.")


class TlsConfig(Strict):
    """TLS to the broker. The broker's certificate is always verified (chain and host name) unless
    insecure_skip_verify is set; a client certificate is sent when cert_file and key_file are given."""

    ca_file: Path | None = Field(default=None, description="CA certificates (PEM) that signed the broker's "
                                 "certificate; unset: the system's CAs.")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM), for brokers that "
                                   "require one (require_certificate).")
    key_file: Path | None = Field(default=None, description="Private key of the client certificate (PEM, "
                                  "unencrypted, mode 0600).")
    insecure_skip_verify: bool = Field(default=False, description="Do not verify the broker's certificate. "
                                       "For lab use only: anyone on the path can then read and change traffic.")


class MqttConfig(Strict):
    """The broker connection (docs/uplink.md). The session is persistent: QoS 1 messages for this
    client are kept by the broker while it is away."""

    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, gt=0, lt=65536, description="Broker port (8883 is usual for TLS).")
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT version; 3.1.1 for brokers without "
                                            "MQTT 5 (the store then uses no shared subscription).")
    client_id: str | None = Field(default=None, description="Fixed client id (keeps the persistent session); "
                                  "default blackbox-agent-<gateway> or blackbox-store-<host name>; a store "
                                  "worker appends -<worker>.")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="Never logged.")
    tls: TlsConfig | None = Field(default=None, description="Connect with TLS; unset: plain TCP.")
    keepalive: int = Field(default=30, gt=0, description="Seconds between keepalive pings; the broker "
                           "publishes the last will after 1.5 times this without traffic.")
    reconnect_max: int = Field(default=30, ge=1, description="Longest wait between reconnection attempts, "
                               "seconds (the wait doubles from 1 s).")
    topic_root: str = Field(default="blackbox", pattern=r"^[^#+]+$", description="First level(s) of every topic.")


class UplinkConfig(Strict):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    ack_timeout: float = Field(default=10.0, gt=0, description="Seconds before an unacknowledged batch is re-sent; "
                               "doubles with each re-send of the same batch, up to ack_timeout_max.")
    ack_timeout_max: float = Field(default=120.0, gt=0, description="Longest wait before re-sending a batch that is "
                                   "still not acknowledged (the store is away: no point flooding the broker).")
    max_in_flight: int = Field(default=20, ge=2, description="Batches sent but not yet acknowledged; a quarter of "
                               "them (at least one) is kept for live batches while a backlog is replayed.")
    replay_rate: float = Field(default=60_000, gt=0, description="Records per second at most when replaying a "
                               "backlog (after an outage); live batches are not limited.")
    shutdown_grace: float = Field(default=5.0, ge=0, description="Seconds a stopping agent waits for pending acks.")
    store_key: str | None = Field(default=None, description="The store's verifier key (`blackbox store keys show` "
                                  "prints it: name+hash+base64). Every acknowledgement must be a receipt signed by "
                                  "it; without it no batch is ever counted delivered (nor pruned).")

    @model_validator(mode="after")
    def _vkey(self) -> UplinkConfig:
        if self.store_key is not None:
            try:
                parse_vkey(self.store_key)
            except NoteError as exc:
                raise ValueError(f"store_key: {exc}") from None
        return self


class SpecificationConfig(Strict):
    """Joint control (docs/joint-control.md): limits and quality rules come only from specifications
    approved by the factory QA and the regulator. Without this section the configured limits apply,
    and every report says they are unapproved."""

    files: list[Path] = Field(min_length=1, description="Specification files (YAML); each one's signatures "
                              "are in <file>.sig. One per product; limits and rules are taken from them only.")
    qa_keys: list[Path] = Field(min_length=1, description="Public keys (PEM) of the factory QA approvers.")
    regulator_keys: list[Path] = Field(min_length=1, description="Public keys (PEM) of the regulator. Only the "
                                       "public key: the regulator's private key never comes to the gateway.")


class ProductRetention(Strict):
    shelf_life_months: int = Field(gt=0, description="Shelf life: a batch expires this long after it ended.")
    years_after_expiry: float = Field(default=1.0, ge=1, description="Years its records are kept after expiry.")


class RetentionConfig(Strict):
    """How long the store keeps records: at least until the product expires plus one year."""

    shelf_life_months: int = Field(default=36, gt=0, description="Shelf life of products without their own "
                                   "entry (and without a retention in their specification).")
    years_after_expiry: float = Field(default=1.0, ge=1, description="Years kept after expiry, at least 1.")
    products: dict[str, ProductRetention] = Field(default_factory=dict, description="Per product code.")


class WebConfig(Strict):
    """The store's web window (``blackbox store web``): HTTP API and pages, a process of its own."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, gt=0, lt=65536, description="Port to listen on.")
    tls_cert_file: Path | None = Field(default=None, description="Certificate chain (PEM) to serve HTTPS; session "
                                       "cookies are then marked Secure.")
    tls_key_file: Path | None = Field(default=None, description="Private key (PEM) of tls_cert_file.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses of reverse proxies whose "
                                       "X-Forwarded-For/-Proto headers are believed (TLS terminated there).")
    session_hours: float = Field(default=12.0, gt=0, description="Lifetime of a login session, hours.")
    timezone: str = Field(default="Asia/Shanghai", description="Time zone for sites whose configuration "
                          "names none.")
    language: Literal["zh-CN", "en"] = Field(default="zh-CN", description="Default language of the pages.")
    report_cache_s: float = Field(default=300.0, ge=0, description="Seconds a computed trace report is reused "
                                  "(in memory, until a new sealed batch of its gateways arrives); 0: never. "
                                  "Bounds how long an edit of stored rows can go unseen by the pages.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return known_timezone(v)

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self


class StoreConfig(Strict):
    database_url: str = Field(default="sqlite:///var/store.sqlite",
                              description="SQLAlchemy URL: sqlite:///file or postgresql+psycopg://user@host/db.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    key_file: Path = Field(default=Path("store.key"), description="The store's Ed25519 private key (PEM, 0600; "
                           "`blackbox store keys init`): signs receipts and checkpoints of the transparency log.")
    log_origin: str = Field(default="blackbox-store", pattern=r"^[^\s+]+$", max_length=128,
                            description="Name of the store's transparency log: the origin line of its checkpoints "
                            "and the name of its key. Make it unique (a domain name and path); never change it.")
    metrics_port: int | None = Field(default=None, ge=0, lt=65536,
                                     description="Serve Prometheus metrics (/metrics) and a health check (/health) "
                                                 "on this TCP port; unset: off. Worker N (store serve --worker N) "
                                                 "listens on this port + N - 1.")
    metrics_host: str = Field(default="127.0.0.1", min_length=1,
                              description="Address the metrics endpoint listens on.")
    partitions_ahead: int = Field(default=3, ge=1, le=120,
                                  description="PostgreSQL: months of readings partitions the store keeps created "
                                              "ahead of the current one (checked at start and hourly).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig,
                                       description="Records kept until product expiry + 1 year at least.")
    web: WebConfig = Field(default_factory=WebConfig, description="HTTP API and pages (blackbox store web).")


class Config(Strict):
    site: SiteConfig = Field(description="The factory and line this gateway records.")
    gateway: GatewayConfig = Field(description="This gateway's identity and signing key.")
    sources: list[SourceConfig] = Field(default_factory=list, description="PLCs and servers to poll.")
    context: ContextConfig = Field(default_factory=ContextConfig,
                                   description="Tags that carry batch, phase, lots consumed and QC results.")
    rules: list[Rule] = Field(default_factory=list, description="Alarm rules evaluated on every reading.")
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig,
                                 description="Alarm management: chattering, floods, shelving.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="The running agent's local interfaces.")
    buffer: BufferConfig = Field(default_factory=BufferConfig, description="The local SQLite buffer.")
    record: RecordConfig = Field(default_factory=RecordConfig,
                                 description="Batch record: operator signatures, QC release, cleaning validity.")
    seal: SealConfig = Field(default_factory=SealConfig, description="When records are sealed into batches.")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig, description="Delivery to the store over MQTT.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="The store (for blackbox store/trace).")
    specification: SpecificationConfig | None = Field(
        default=None, description="Approved specifications the limits and rules come from (joint control).")

    def tags(self) -> Iterator[TagConfig]:
        for source in self.sources:
            yield from source.tags

    def tag_index(self) -> dict[str, TagConfig]:
        return {t.name: t for t in self.tags()}


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file."""

    file: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path
    sha256: str
    """Hash of the file's exact bytes: recorded in every sealed batch and in ``config.applied``."""


class StoreFile(Strict):
    """A configuration file for the store side only: just the ``store:`` section."""

    store: StoreConfig = Field(default_factory=StoreConfig)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", None, f"cannot read file: {exc.strerror or exc}")]) from exc


def load_config(path: str | Path) -> LoadedConfig:
    """Read, parse and validate a configuration file; raise :class:`ConfigError` listing every issue.

    Relative paths in the file (key, buffer, socket, certificates, a SQLite store) are resolved
    against the file's folder, not the current directory: a command run from anywhere finds the same
    files the service does.
    """
    path = Path(path)
    raw_bytes = _read(path)
    config = parse_config(raw_bytes.decode("utf-8", errors="replace"), str(path))
    config = resolve_paths(config, Path(os.path.abspath(path)).parent)
    return LoadedConfig(config=config, path=path, sha256=hashlib.sha256(raw_bytes).hexdigest())


def is_store_only(data: Any) -> bool:
    """Whether a parsed document is a store-side file (only a ``store:`` section)."""
    return isinstance(data, dict) and set(data) <= {"store"}


def load_store_config(path: str | Path) -> StoreConfig:
    """The ``store:`` section of a store-side file (``store:`` only) or of a full gateway file."""
    path = Path(path)
    text = _read(path).decode("utf-8", errors="replace")
    try:
        node, data = _compose_and_load(text)
    except (yaml.YAMLError, _YamlShapeError, RecursionError):
        node, data = None, None  # parse_config reports it with its line
    if not is_store_only(data):
        return load_config(path).config.store
    try:
        store = StoreFile.model_validate(data or {}).store
    except ValidationError as exc:
        lines = _line_index(node) if node is not None else {}
        raise ConfigError([ConfigIssue(str(path), _dotted(tuple(e["loc"])), _nearest_line(lines, tuple(e["loc"])),
                                       e["msg"]) for e in exc.errors(include_url=False)]) from None
    return resolve_paths(store, Path(os.path.abspath(path)).parent)


M = TypeVar("M", bound=BaseModel)


def resolve_paths(model: M, base: Path) -> M:
    """A copy of ``model`` whose relative ``Path`` fields (at any depth) and relative SQLite URL are
    absolute under ``base``."""
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolved(value, base)
        if new is not value:
            update[name] = new
    if isinstance(model, StoreConfig) and (url := _sqlite_file_url(model.database_url, base)):
        update["database_url"] = url
    return model.model_copy(update=update) if update else model


def _resolved(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_paths(value, base)
    if isinstance(value, list):
        items = [_resolved(v, base) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _sqlite_file_url(url: str, base: Path) -> str | None:
    """``sqlite:///rel/file`` made absolute under ``base``; None if not a relative SQLite file URL."""
    prefix, _, rest = url.partition(":///")
    if not prefix.startswith("sqlite") or not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return None
    return f"{prefix}:///{base / rest}"


def parse_config(text: str, name: str = "<string>") -> Config:
    """Validate YAML text; raise :class:`ConfigError` listing every issue with its line."""
    try:
        node, data = _compose_and_load(text)
        lines = _line_index(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise ConfigError([ConfigIssue(name, "", line, f"not valid YAML: {context + ': ' if context else ''}"
                                       f"{problem}{column}")]) from exc
    except _YamlShapeError as exc:
        raise ConfigError([ConfigIssue(name, "", None, f"not a usable YAML document: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(name, "", None, "not a usable YAML document: nested too deeply")]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(name, "", 1, "the file must be a YAML mapping")])

    issues: list[ConfigIssue] = []

    def collect(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> None:
        for err in exc.errors(include_url=False):
            loc = prefix + tuple(err["loc"])
            issues.append(ConfigIssue(name, _dotted(loc), _nearest_line(lines, loc), err["msg"]))

    # Sources are validated one by one against their driver's model (which knows the protocol's
    # fields); the rest of the document against the core models.
    sources_raw = data.get("sources") or []
    config: Config | None = None
    try:
        config = Config.model_validate({**data, "sources": []} if isinstance(sources_raw, list) else data)
    except ValidationError as exc:
        collect(exc)

    from drivers import registry  # late import: drivers depend on this module

    specific: list[SourceConfig] = []
    for i, raw in enumerate(sources_raw if isinstance(sources_raw, list) else []):
        protocol = raw.get("protocol") if isinstance(raw, dict) else None
        model: type[SourceConfig] = SourceConfig
        if isinstance(protocol, str):
            try:
                model = registry.config_model(protocol)
            except KeyError:
                loc = ("sources", i, "protocol")
                issues.append(ConfigIssue(name, _dotted(loc), _nearest_line(lines, loc),
                                          f"unknown protocol {protocol!r} (known: {', '.join(registry.names())})"))
        try:
            specific.append(model.model_validate(raw))
        except ValidationError as exc:
            collect(exc, ("sources", i))

    issues.extend(_cross_check(data, name, lines))
    issues.extend(ConfigIssue(name, _dotted(loc), _nearest_line(lines, loc),
                              "text holds a NUL character (\\0), which a sealed batch cannot carry")
                  for loc in _nul_texts(data))
    if issues:
        raise ConfigError(sorted(issues, key=lambda x: x.line or 0))
    if config is None:
        raise RuntimeError("internal error: expected config is not None")
    return config.model_copy(update={"sources": specific})


def _cross_check(data: dict[str, Any], name: str, lines: dict[tuple[Any, ...], int]) -> list[ConfigIssue]:
    """Checks that span sections: unique names, references to tags that exist.

    They run on the raw document, so that they are reported even when other sections are invalid.
    """
    issues: list[ConfigIssue] = []

    def add(loc: tuple[Any, ...], msg: str) -> None:
        issues.append(ConfigIssue(name, _dotted(loc), _nearest_line(lines, loc), msg))

    def items(value: Any) -> list[tuple[int, dict[str, Any]]]:
        return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] if isinstance(value, list) else []

    seen_sources: set[str] = set()
    tags: dict[str, dict[str, Any]] = {}
    for i, src in items(data.get("sources")):
        src_name = str(src.get("name"))
        if src_name in seen_sources:
            add(("sources", i, "name"), f"duplicate source name {src_name!r}")
        seen_sources.add(src_name)
        for j, tag in items(src.get("tags")):
            tag_name = tag.get("name")
            if isinstance(tag_name, str):
                if tag_name in tags:
                    add(("sources", i, "tags", j, "name"), f"duplicate tag name {tag_name!r}")
                tags[tag_name] = tag

    def ref(loc: tuple[Any, ...], tag: Any) -> None:
        if isinstance(tag, str) and tag not in tags:
            add(loc, f"no tag named {tag!r} is configured")

    ctx = data.get("context") if isinstance(data.get("context"), dict) else {}
    if not isinstance(ctx, dict):
        raise RuntimeError("internal error: expected isinstance(ctx, dict)")
    for fld in ("batch_tag", "product_tag", "recipe_tag", "recipe_version_tag", "phase_tag"):
        ref(("context", fld), ctx.get(fld))
    for i, m in items(ctx.get("materials")):
        for fld in ("trigger", "material", "lot", "target", "actual", "scale", "operator", "tolerance"):
            ref(("context", "materials", i, fld), m.get(fld))
    for i, q in items(ctx.get("qc")):
        ref(("context", "qc", i, "trigger"), q.get("trigger"))
        ref(("context", "qc", i, "sample"), q.get("sample"))
        if isinstance(q.get("tests"), dict):
            for test, tag in q["tests"].items():
                ref(("context", "qc", i, "tests", test), tag)
    alarm_ids: set[str] = set()
    for i, rule in items(data.get("rules")):
        tag_name = rule.get("tag")
        ref(("rules", i, "tag"), tag_name)
        kind = rule.get("type", "threshold")
        if kind in LIMIT_RULES and isinstance(tag_name, str) and tag_name in tags and not tags[tag_name].get("limits"):
            add(("rules", i, "tag"), f"tag {tag_name!r} has no limits for a {kind} rule to check")
        for fld in ("when", "suppress_when"):
            if isinstance(rule.get(fld), dict):
                ref(("rules", i, fld, "tag"), rule[fld].get("tag"))
        ref(("rules", i, "sample_on"), rule.get("sample_on"))
        if kind == "disconnected" and isinstance(rule.get("source"), str) and rule["source"] not in seen_sources:
            add(("rules", i, "source"), f"no source named {rule['source']!r} is configured")
        try:
            alarm_id = _RULE_ADAPTER.validate_python(rule).alarm_id()
        except ValidationError:
            continue  # reported by the model validation
        if alarm_id in alarm_ids:
            add(("rules", i), f"two rules raise the alarm {alarm_id!r}: give one of them another id")
        if alarm_id in RESERVED_ALARM_IDS:
            add(("rules", i), f"the alarm id {alarm_id!r} is the agent's own (the buffer lost data): "
                              "give the rule another id")
        alarm_ids.add(alarm_id)
    return issues


def _nul_texts(data: Any) -> list[tuple[Any, ...]]:
    """Where the document holds a text (key or value) with a NUL character: the configuration is
    recorded in the chain (``config.applied``), and the batch format forbids NUL."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    seen: set[int] = set()  # YAML aliases share (even nest) nodes: visit each container once
    while stack:
        node, loc = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and "\x00" in key:
                    found.append(loc)
                stack.append((value, (*loc, key)))
        elif isinstance(node, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node))
        elif isinstance(node, str) and "\x00" in node:
            found.append(loc)
    return found


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""LibYAML's loader when PyYAML has it (ten times faster), else the pure-Python one: same results."""


def _compose_and_load(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node graph (for line numbers) and its data, parsed once.

    Raises :class:`_YamlShapeError` before building any data from a document that contains itself
    or expands to too many nodes.
    """
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_shape(node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.MappingNode):
        return [c for pair in n.value for c in pair]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def _check_shape(root: yaml.Node) -> None:
    """Refuse a node graph with a cycle (a recursive alias) or more than :data:`MAX_YAML_NODES` nodes
    once aliases are expanded; linear in the number of distinct nodes (aliases share them)."""
    size: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        n, leaving = stack.pop()
        key = id(n)
        if leaving:
            size[key] = 1 + sum(size[id(c)] for c in _children(n))
            if size[key] > MAX_YAML_NODES:
                raise _YamlShapeError(f"the document expands to more than {MAX_YAML_NODES:,} nodes (aliases?)")
            continue
        if key in size:
            continue
        if key in entered:  # entered, not left: we are inside it, so it contains itself
            raise _YamlShapeError(f"a value at line {n.start_mark.line + 1} contains itself (a recursive alias)")
        entered.add(key)
        stack.append((n, True))
        stack.extend((c, False) for c in _children(n) if id(c) not in size)


MAX_YAML_NODES = 1_000_000
"""Nodes a configuration may expand to (aliases included): a few aliases can otherwise expand to
billions of nodes ("billion laughs"); a real configuration has thousands."""


class _YamlShapeError(ValueError):
    """The YAML document nests itself through an alias, or expands to too many nodes."""


def _line_index(node: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map every path in the YAML document to the 1-based line where its value starts.

    The node graph has passed :func:`_check_shape`: no cycle, a bounded expansion. Iterative, so
    that a deep document cannot exhaust Python's stack.
    """
    index: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())]
    while stack:
        n, path = stack.pop()
        index.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                k = key.value
                index[(*path, k)] = key.start_mark.line + 1  # the key's line, not its value's
                stack.append((value, (*path, k)))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(n.value))
    return index


def _nearest_line(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """Line of ``loc``, or of its closest existing parent (a missing field points at its owner)."""
    # pydantic puts the discriminator or union member name into loc; drop non-document parts
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
