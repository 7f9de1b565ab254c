"""Configuration: pydantic models and a loader that reports every error with file, path and line.

Sources are protocol-specific: the base :class:`SourceConfig` holds what every source has, and
each driver registers its own subclass (see :mod:`drivers`). The loader validates the common part
first, then each source against its driver's model, and collects every error before raising.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from blackbox.model import Category

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]


class Strict(BaseModel):
    """Base for configuration models: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(Strict):
    id: Identifier = Field(description="Short site id used in MQTT topics and store authorisation, e.g. SH-PD-01.")
    name: str = Field(min_length=1, description="Factory name as registered with the regulator.")
    licence: str = Field(min_length=1, description="Production licence number of the site.")
    line: str = Field(default="L1", min_length=1, description="Production line this gateway records.")


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
        return (not self.phases or phase in self.phases) and (not self.products or product in self.products)

    def specificity(self) -> int:
        return (2 if self.phases else 0) + (1 if self.products else 0)


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

    def limits_for(self, phase: str | None, product: str | None) -> LimitSet | None:
        """The most specific limit set in force for this phase and product, if any."""
        candidates = [ls for ls in self.limits if ls.applies(phase, product)]
        return max(candidates, key=LimitSet.specificity) if candidates else None


class SourceConfig(Strict):
    """What every source has. Drivers subclass it (and its tag model) with protocol settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Identifier
    protocol: str = Field(description="Driver name: opcua, modbus, or one registered by a plugin.")
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between polls.")
    timeout: float = Field(default=2.0, gt=0, description="Seconds before a request counts as failed.")
    reconnect_min: float = Field(default=0.5, gt=0, description="First reconnect delay, seconds.")
    reconnect_max: float = Field(default=30.0, gt=0, description="Longest reconnect delay, seconds.")
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


class ThresholdRule(Strict):
    type: Literal["threshold"] = "threshold"
    tag: str
    deadband: float = Field(default=0.0, ge=0, description="Hysteresis, in engineering units.")
    on_delay: float = Field(default=0.0, ge=0, description="Seconds the condition must hold to raise.")
    off_delay: float = Field(default=0.0, ge=0, description="Seconds the return must hold to clear.")
    priority: Literal["low", "medium", "high", "critical"] = "medium"


Rule = Annotated[ThresholdRule, Field(discriminator="type")]


class AgentConfig(Strict):
    control_socket: Path = Field(default=Path("var/agent.sock"),
                                 description="Unix socket for blackbox status, batch, alarms… (mode 0660).")


class BufferConfig(Strict):
    path: Path = Field(default=Path("var/buffer.sqlite"), description="SQLite file of the buffer.")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss, NORMAL only crashes."
    )
    quota_mb: float = Field(default=1024, gt=0, description="Disk quota of the buffer, MB.")


class SealConfig(Strict):
    max_records: int = Field(default=5000, gt=0, description="Records per batch at most.")
    max_bytes: int = Field(default=256_000, gt=1024, description="Uncompressed payload bytes per batch, about.")
    max_age: float = Field(default=1.0, gt=0, description="Seconds before a partial batch is sealed.")
    compression: Literal["none", "zlib", "zstd"] = Field(default="zstd", description="Payload compression.")


class TlsConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, gt=0, lt=65536)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive: int = Field(default=30, gt=0)
    topic_root: str = Field(default="blackbox", pattern=r"^[^#+]+$")


class UplinkConfig(Strict):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    ack_timeout: float = Field(default=10.0, gt=0, description="Seconds before an unacknowledged batch is re-sent.")
    max_in_flight: int = Field(default=20, gt=0, description="Batches sent but not yet acknowledged.")
    shutdown_grace: float = Field(default=5.0, ge=0, description="Seconds a stopping agent waits for pending acks.")


class StoreConfig(Strict):
    database_url: str = Field(default="sqlite:///var/store.sqlite",
                              description="SQLAlchemy URL: sqlite:///file or postgresql+psycopg://user@host/db.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)


class Config(Strict):
    site: SiteConfig = Field(description="The factory and line this gateway records.")
    gateway: GatewayConfig = Field(description="This gateway's identity and signing key.")
    sources: list[SourceConfig] = Field(default_factory=list, description="PLCs and servers to poll.")
    context: ContextConfig = Field(default_factory=ContextConfig,
                                   description="Tags that carry batch, phase, lots consumed and QC results.")
    rules: list[Rule] = Field(default_factory=list, description="Alarm rules evaluated on every reading.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="The running agent's local interfaces.")
    buffer: BufferConfig = Field(default_factory=BufferConfig, description="The local SQLite buffer.")
    seal: SealConfig = Field(default_factory=SealConfig, description="When records are sealed into batches.")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig, description="Delivery to the store over MQTT.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="The store (for blackbox store/trace).")

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
        return f"{where}: {self.path or '<root>'}: {self.message}"


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


def load_config(path: str | Path) -> LoadedConfig:
    """Read, parse and validate a configuration file; raise :class:`ConfigError` listing every issue."""
    path = Path(path)
    name = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, "", None, f"cannot read file: {exc.strerror or exc}")]) from exc
    config = parse_config(raw_bytes.decode("utf-8", errors="replace"), name)
    return LoadedConfig(config=config, path=path, sha256=hashlib.sha256(raw_bytes).hexdigest())


def parse_config(text: str, name: str = "<string>") -> Config:
    """Validate YAML text; raise :class:`ConfigError` listing every issue with its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(name, "", line, f"not valid YAML: {exc}")]) from exc
    lines = _line_index(node) if node is not None else {}
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
    if issues:
        raise ConfigError(sorted(issues, key=lambda x: x.line or 0))
    assert config is not None
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
    assert isinstance(ctx, dict)
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
    for i, rule in items(data.get("rules")):
        tag_name = rule.get("tag")
        ref(("rules", i, "tag"), tag_name)
        if isinstance(tag_name, str) and tag_name in tags and not tags[tag_name].get("limits"):
            add(("rules", i, "tag"), f"tag {tag_name!r} has no limits for a threshold rule to check")
    return issues


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _line_index(node: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map every path in the YAML document to the 1-based line where its value starts."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        index[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                k = key.value
                walk(value, (*path, k))
                index[(*path, k)] = key.start_mark.line + 1  # the key's line, not its value's
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    walk(node, ())
    return index


def _nearest_line(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """Line of ``loc``, or of its closest existing parent (a missing field points at its owner)."""
    # pydantic puts the discriminator or union member name into loc; drop non-document parts
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
