"""The ``uplink:`` section: delivery to the store over MQTT (the broker connection is shared with the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from blackbox.config.base import Strict
from blackbox.tlog.note import NoteError, parse_vkey


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
