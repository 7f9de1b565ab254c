"""Configuration: pydantic models and a loader that reports every error with file, path and line.

One module per top-level section of the file (``site``, ``gateway``, ``sources``, ``context``,
``rules``, ``alarms``, ``agent``, ``buffer``, ``record``, ``seal``, ``uplink``, ``store``,
``specification``); :mod:`~blackbox.config.document` joins them into :class:`Config`, and
:mod:`~blackbox.config.load` reads a file. The names below are re-exported for callers that want
the whole configuration.

Sources are protocol-specific: the base :class:`SourceConfig` holds what every source has, and
each driver registers its own subclass (see :mod:`drivers`). The loader validates the common part
first, then each source against its driver's model, and collects every error before raising.
"""

from blackbox.config.agent import AgentConfig
from blackbox.config.alarms import AlarmsConfig
from blackbox.config.base import Identifier, Seconds, Strict, known_timezone
from blackbox.config.buffer import BufferConfig
from blackbox.config.context import ContextConfig, MaterialTrigger, QcTrigger
from blackbox.config.document import Config, StoreFile
from blackbox.config.gateway import GatewayConfig
from blackbox.config.load import (
    ConfigError,
    ConfigIssue,
    LoadedConfig,
    is_store_only,
    load_config,
    load_config_forked,
    load_store_config,
    parse_config,
    resolve_paths,
)
from blackbox.config.record import QcRequirement, RecordConfig
from blackbox.config.rules import (
    LIMIT_RULES,
    RESERVED_ALARM_IDS,
    RULE_ADAPTER,
    RULE_MODELS,
    BadQualityRule,
    BatchRule,
    ControlRule,
    CusumRule,
    DisconnectedRule,
    EwmaRule,
    FrozenRule,
    LimitName,
    Priority,
    RateOfChangeRule,
    Rule,
    RuleBase,
    SpcCheck,
    SpcRule,
    StaleRule,
    TagCondition,
    TagRule,
    ThresholdRule,
    TrendRule,
)
from blackbox.config.seal import SealConfig
from blackbox.config.site import SiteConfig
from blackbox.config.sources import LimitSet, SourceConfig, TagConfig
from blackbox.config.specification import SpecificationConfig
from blackbox.config.store import ProductRetention, RetentionConfig, StoreConfig, WebConfig
from blackbox.config.uplink import MqttConfig, TlsConfig, UplinkConfig

__all__ = [
    "LIMIT_RULES", "RESERVED_ALARM_IDS", "RULE_ADAPTER", "RULE_MODELS", "AgentConfig", "AlarmsConfig",
    "BadQualityRule", "BatchRule", "BufferConfig", "Config", "ConfigError", "ConfigIssue", "ContextConfig",
    "ControlRule", "CusumRule", "DisconnectedRule", "EwmaRule", "FrozenRule", "GatewayConfig", "Identifier",
    "LimitName", "LimitSet", "LoadedConfig", "MaterialTrigger", "MqttConfig", "Priority", "ProductRetention",
    "QcRequirement", "QcTrigger", "RateOfChangeRule", "RecordConfig", "RetentionConfig", "Rule", "RuleBase",
    "SealConfig", "Seconds", "SiteConfig", "SourceConfig", "SpcCheck", "SpcRule", "SpecificationConfig",
    "StaleRule", "StoreConfig", "StoreFile", "Strict", "TagCondition", "TagConfig", "TagRule", "ThresholdRule",
    "TlsConfig", "TrendRule", "UplinkConfig", "WebConfig", "is_store_only", "known_timezone", "load_config",
    "load_config_forked", "load_store_config", "parse_config", "resolve_paths",
]
