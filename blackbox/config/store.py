"""The ``store:`` section: the store's database, broker, keys, retention and web window."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from blackbox.config.base import Strict, known_timezone
from blackbox.config.uplink import MqttConfig


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
                                  description="PostgreSQL: months of reading chunk partitions the store keeps created "
                                              "ahead of the current one (checked at start and hourly).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig,
                                       description="Records kept until product expiry + 1 year at least.")
    web: WebConfig = Field(default_factory=WebConfig, description="HTTP API and pages (blackbox store web).")
