"""Configuration models of an OPC UA source and its tags, and the tag address syntax.

A tag address is a node id in the OPC UA text form, with the namespace named by index or URI:

* ``s=EM-01.temperature`` / ``i=1234``: in the source's ``namespace_uri`` (namespace 0 if none);
* ``ns=2;s=EM-01.temperature``: an explicit namespace index (fragile: indexes can change on restart);
* ``nsu=urn:blackbox:sim;s=EM-01.temperature``: an explicit namespace URI.

Identifiers may be numeric (``i=``), string (``s=``), GUID (``g=``) or opaque base64 (``b=``).
URIs are resolved to indexes at connect, from the server's namespace array.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from blackbox.config.sources import SourceConfig, TagConfig

OpcUaType = Literal["Double", "Float", "Int16", "Int32", "Int64", "UInt16", "UInt32", "UInt64", "Boolean",
                    "String", "DateTime"]
Security = Literal["None", "Sign", "SignAndEncrypt"]

_ADDRESS = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+(?:;[^;]+)*?);)?(?P<kind>[isgb])=(?P<id>.+)$", re.DOTALL)


NodeKind = Literal["i", "s", "g", "b"]


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A parsed tag address: the namespace (index, URI, or neither = the source's default) and identifier."""

    namespace_index: int | None
    namespace_uri: str | None
    kind: NodeKind
    identifier: int | str | uuid.UUID | bytes


def parse_node_address(text: str) -> NodeAddress:
    """Parse a tag address; ``ValueError`` with a clear message if it is not one."""
    m = _ADDRESS.match(text.strip())
    if m is None:
        raise ValueError(
            f"address {text!r} is not a node id: use s=<name> or i=<number> (in the source's namespace_uri), "
            "ns=<index>;s=<name>, or nsu=<uri>;s=<name>"
        )
    kind = cast(NodeKind, m.group("kind"))  # _ADDRESS matches no other
    raw = m.group("id")
    identifier: int | str | uuid.UUID | bytes
    try:
        if kind == "i":
            identifier = int(raw)
            if not 0 <= identifier <= 0xFFFFFFFF:
                raise ValueError
        elif kind == "g":
            identifier = uuid.UUID(raw)
        elif kind == "b":
            identifier = base64.b64decode(raw, validate=True)
        else:
            identifier = raw
    except (ValueError, binascii.Error) as exc:
        what = {"i": "an unsigned 32-bit number", "g": "a GUID", "b": "base64"}[kind]
        raise ValueError(f"address {text!r}: the {kind}= identifier must be {what}") from exc
    ns = m.group("ns")
    index = int(ns) if ns is not None else None
    if index is not None and index > 0xFFFF:
        raise ValueError(f"address {text!r}: namespace index {index} is above 65535")
    return NodeAddress(index, m.group("nsu"), kind, identifier)


class OpcUaTagConfig(TagConfig):
    """One OPC UA variable, read by its Value attribute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(description="Node id: s=Name or i=123 (source namespace), ns=2;s=Name, nsu=<uri>;s=Name.")
    type: OpcUaType = Field(description="Expected data type; a value of another type reads as bad quality.")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        parse_node_address(value)
        return value.strip()

    @property
    def node(self) -> NodeAddress:
        return parse_node_address(self.address)


SUBSCRIPTION_FIELDS = ("publishing_interval", "sampling_interval", "queue_size", "deadband_type", "deadband_value",
                       "watchdog")


class OpcUaSourceConfig(SourceConfig):
    """An OPC UA server: polled with one Read per cycle (split only by the server's MaxNodesPerRead),
    or read by subscription (monitored items)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["opcua"] = "opcua"
    endpoint: str = Field(pattern=r"^opc\.tcp://[^/\s]+", description="Server endpoint, e.g. opc.tcp://plc:4840.")
    namespace_uri: str | None = Field(default=None, min_length=1,
                                      description="Namespace of tag addresses that name none, e.g. urn:acme:line1.")
    username: str | None = Field(default=None, min_length=1, description="User name; omit for anonymous.")
    password: SecretStr | None = Field(default=None, description="Password of username (never logged).")
    security: Security = Field(
        default="None",
        description="Message security mode: None, Sign or SignAndEncrypt (policy Basic256Sha256).",
    )
    certificate: Path | None = Field(default=None, description="Client certificate (DER or PEM) for Sign modes; "
                                     "its URI SubjectAltName is the client's application URI.")
    private_key: Path | None = Field(default=None, description="Private key of the client certificate (PEM or DER).")
    private_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted private key.")
    server_certificate: Path | None = Field(
        default=None, description="The server's certificate, to secure the channel with it rather than with the "
        "one the server presents when asked for its endpoints.")
    mode: Literal["poll", "subscription"] = Field(
        default="poll", description="poll: one Read of every node per poll_interval; subscription: the server "
        "reports changes (monitored items).")
    publishing_interval: float | None = Field(
        default=None, gt=0, description="Subscription: seconds between the server's notifications (default: "
        "poll_interval).")
    sampling_interval: float | None = Field(
        default=None, ge=0, description="Subscription: seconds between the server's samples of each node; 0: as "
        "fast as it can (default: the publishing interval).")
    queue_size: int = Field(default=10, ge=1, le=100_000, description="Subscription: changes the server keeps per "
                            "node between two notifications (1: only the latest; overflows are counted).")
    deadband_type: Literal["none", "absolute", "percent"] = Field(
        default="none", description="Subscription: server-side deadband of numeric nodes: absolute (engineering "
        "units) or percent (of the node's EURange).")
    deadband_value: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                                  description="Subscription: the deadband, in units or percent.")
    watchdog: float | None = Field(
        default=None, gt=0, description="Subscription: seconds without any notification or keep-alive after which "
        "the subscription is rebuilt (default: three keep-alive periods plus timeout).")
    tags: list[OpcUaTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @field_validator("endpoint")
    @classmethod
    def _no_credentials_in_endpoint(cls, value: str) -> str:
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("put credentials in username and password, not in the endpoint (endpoints are logged)")
        return value

    @field_validator("security", mode="before")
    @classmethod
    def _none_is_none(cls, value: Any) -> Any:
        return "None" if value is None else value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSourceConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        if self.security != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security {self.security} needs certificate and private_key")
        if self.security == "None":
            given = [f for f in ("certificate", "private_key", "private_key_password", "server_certificate")
                     if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to security Sign or SignAndEncrypt, not None")
        if self.mode == "poll":
            given = [f for f in SUBSCRIPTION_FIELDS if f in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)} apply to mode subscription, not poll")
        if self.deadband_type == "none" and self.deadband_value != 0:
            raise ValueError("deadband_value needs deadband_type absolute or percent")
        if self.deadband_type == "percent" and self.deadband_value > 100:
            raise ValueError(f"a percent deadband is at most 100, not {self.deadband_value}")
        return self

    @property
    def publishing_interval_s(self) -> float:
        """The publishing interval in force (subscription mode)."""
        return self.publishing_interval if self.publishing_interval is not None else self.poll_interval

    @property
    def sampling_interval_s(self) -> float:
        """The sampling interval in force (subscription mode)."""
        return self.sampling_interval if self.sampling_interval is not None else self.publishing_interval_s
