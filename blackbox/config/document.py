"""The whole configuration file: one model per top-level section, each owned by its module."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from blackbox.config.agent import AgentConfig
from blackbox.config.alarms import AlarmsConfig
from blackbox.config.base import Strict
from blackbox.config.buffer import BufferConfig
from blackbox.config.context import ContextConfig
from blackbox.config.gateway import GatewayConfig
from blackbox.config.record import RecordConfig
from blackbox.config.rules import Rule
from blackbox.config.seal import SealConfig
from blackbox.config.site import SiteConfig
from blackbox.config.sources import SourceConfig, TagConfig
from blackbox.config.specification import SpecificationConfig
from blackbox.config.store import StoreConfig
from blackbox.config.uplink import UplinkConfig


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


class StoreFile(Strict):
    """A configuration file for the store side only: just the ``store:`` section."""

    store: StoreConfig = Field(default_factory=StoreConfig)
