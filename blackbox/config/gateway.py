"""The ``gateway:`` section: this gateway's identity and signing key."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blackbox.config.base import Identifier, Strict


class GatewayConfig(Strict):
    id: Identifier = Field(description="Gateway id, unique within the site; names the MQTT topics.")
    key_file: Path = Field(default=Path("gateway.key"), description="Ed25519 private key (PEM, 0600).")
