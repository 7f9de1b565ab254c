"""The OPC UA poll driver: one Read service call per cycle for all of a source's nodes.

asyncua's ``read_values`` neither splits by the server's ``MaxNodesPerRead`` nor returns status
codes and timestamps, so the driver builds the low-level ``ReadParameters`` once at connect
(chunked by the limit read from the server) and sends them with ``uaclient.read``. Each
``DataValue`` becomes a sample: the server's source timestamp is kept, Good/Uncertain/Bad map to
the sample's quality (the status name is the reason), and values that are NaN, ±inf, of another
type than configured or out of the configured integer range read as bad quality.

Namespace URIs are resolved to indexes at connect, from the server's namespace array: indexes
may change when a server restarts, URIs do not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from blackbox.config import SourceConfig
from blackbox.model import Quality, Sample
from drivers.base import SourceHealth, SourceUnavailable
from drivers.opcua.config import NodeAddress, OpcUaSourceConfig
from drivers.opcua.convert import ConversionError, convert

log = logging.getLogger(__name__)

for _name in ("asyncua", "asyncua.client", "asyncua.server"):
    _logger = logging.getLogger(_name)
    if _logger.getEffectiveLevel() < logging.WARNING:
        _logger.setLevel(logging.WARNING)  # INFO dumps whole service responses

_SC = ua.StatusCodes
LINK_LOST_CODES = frozenset({
    _SC.BadSessionIdInvalid, _SC.BadSessionClosed, _SC.BadSessionNotActivated, _SC.BadSecureChannelIdInvalid,
    _SC.BadSecureChannelClosed, _SC.BadConnectionClosed, _SC.BadServerHalted, _SC.BadShutdown,
    _SC.BadCommunicationError, _SC.BadTimeout, _SC.BadRequestTimeout, _SC.BadNotConnected,
    _SC.BadServerNotConnected, _SC.BadTcpInternalError, _SC.BadSecureChannelTokenUnknown,
})
"""Service results that mean the session or its channel is gone: the source is unavailable."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OPC_MIN = datetime(1601, 1, 2, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    type: str
    node_id: ua.NodeId


@dataclass(slots=True)
class _Chunk:
    """One Read service call: prebuilt parameters and the tags they read, in order."""

    params: ua.ReadParameters
    nodes: list[_Node]


def _timestamp_us(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    if ts < _OPC_MIN:  # DateTime 0 on the wire: "no timestamp"
        return None
    return (ts - _EPOCH) // _MICROSECOND


def _node_id(address: NodeAddress, index: int) -> ua.NodeId:
    kinds = {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String, "g": ua.NodeIdType.Guid,
             "b": ua.NodeIdType.ByteString}
    # asyncua annotates with int/str subclasses (ua.Int32, ua.String...); plain values encode the same
    return ua.NodeId(cast(Any, address.identifier), ua.Int16(index), kinds[address.kind])


def to_sample(name: str, type_name: str, dv: ua.DataValue) -> Sample:
    """Turn one ``DataValue`` into a sample of the configured type."""
    status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode(ua.UInt32(_SC.Good))
    source_ts = _timestamp_us(dv.SourceTimestamp)
    if status.is_bad():
        return Sample(name, None, Quality.BAD, status.name, source_ts)
    quality = Quality.UNCERTAIN if status.is_uncertain() else Quality.GOOD
    reason = None if status.value == _SC.Good else status.name
    variant = dv.Value
    try:
        value = convert(variant.Value, type_name, variant.VariantType.name) if variant is not None \
            else convert(None, type_name)
    except ConversionError as exc:
        return Sample(name, None, Quality.BAD, str(exc), source_ts)
    return Sample(name, value, quality, reason, source_ts)


class OpcUaDriver:
    """An OPC UA server, polled (see the module docstring)."""

    def __init__(self, config: OpcUaSourceConfig) -> None:
        self.config: SourceConfig = config  # the Driver protocol's view
        self.settings = config
        """The same configuration, with the protocol's own fields."""
        self.health = SourceHealth()
        self.max_nodes_per_read = 0
        """Most nodes per Read: the server's MaxNodesPerRead, or less if it refused that (0: no limit)."""
        self.namespace_array: list[str] = []
        self._client: Client | None = None
        self._nodes: list[_Node] = []
        self._chunks: list[_Chunk] = []
        self._unresolved: dict[str, str] = {}  # tag name -> why it has no node id
        self._order = [t.name for t in config.tags]

    async def connect(self) -> None:
        cfg = self.settings
        if cfg.security != "None":
            self.health.last_error = f"security {cfg.security} is not implemented yet"
            raise SourceUnavailable(f"{cfg.name}: OPC UA security {cfg.security} is not implemented yet")
        await self.close()
        client = Client(cfg.endpoint, timeout=cfg.timeout, watchdog_intervall=max(10.0, 2 * cfg.poll_interval))
        client.name = client.description = f"blackbox {cfg.name}"
        client.application_uri = f"urn:blackbox:gateway:{cfg.name}"
        # a gateway that vanished should not pin a session on a PLC with few of them for an hour
        client.session_timeout = max(60_000, int(10_000 * cfg.poll_interval))
        if cfg.username is not None and cfg.password is not None:
            client.set_user(cfg.username)
            client.set_password(cfg.password.get_secret_value())
        try:
            await asyncio.wait_for(client.connect(), timeout=4 * cfg.timeout)
        except (TimeoutError, OSError, UaError) as exc:
            await _abandon(client)
            raise self._unavailable(f"cannot connect to {cfg.endpoint}: {_describe(exc)}") from exc
        try:
            self.namespace_array = list(await client.get_namespace_array())
            self.max_nodes_per_read = await _max_nodes_per_read(client)
        except (TimeoutError, OSError, UaError) as exc:
            await _abandon(client)
            raise self._unavailable(f"connected to {cfg.endpoint} but cannot read its namespaces: "
                                    f"{_describe(exc)}") from exc
        self._resolve()
        self._client = client
        self.health.connected = True

    async def read(self) -> list[Sample]:
        client = self._client
        if client is None:
            raise self._unavailable("not connected")
        began = time.perf_counter()
        samples = {name: Sample(name, None, Quality.BAD, why) for name, why in self._unresolved.items()}
        pending = list(self._chunks)
        shrunk = False
        while pending:
            chunk = pending.pop(0)
            try:
                results = await client.uaclient.read(chunk.params)
            except UaStatusCodeError as exc:
                if exc.code in LINK_LOST_CODES:
                    await self.close()
                    raise self._unavailable(f"read failed: {_describe(exc)}") from exc
                if exc.code == _SC.BadTooManyOperations and len(chunk.nodes) > 1:
                    # the server refuses more than it advertised (or advertises no limit): halve and retry
                    half = len(chunk.nodes) // 2
                    pending[0:0] = [_chunk(chunk.nodes[:half]), _chunk(chunk.nodes[half:])]
                    self.max_nodes_per_read = min(self.max_nodes_per_read or half, half)
                    shrunk = True
                    continue
                # the service as a whole failed: these tags are bad, the other chunks go on
                reason = _describe(exc)
                self.health.last_error = reason
                for node in chunk.nodes:
                    samples[node.name] = Sample(node.name, None, Quality.BAD, reason)
                continue
            except (TimeoutError, OSError, UaError) as exc:
                await self.close()
                raise self._unavailable(f"read failed: {_describe(exc)}") from exc
            except Exception as exc:  # a response asyncua could not make sense of: start afresh
                log.warning("%s: unexpected error reading from %s", self.config.name, self.settings.endpoint,
                            exc_info=True)
                await self.close()
                raise self._unavailable(f"read failed: {_describe(exc)}") from exc
            if len(results) != len(chunk.nodes):
                reason = f"server returned {len(results)} results for {len(chunk.nodes)} nodes"
                self.health.last_error = reason
                for node in chunk.nodes:
                    samples[node.name] = Sample(node.name, None, Quality.BAD, reason)
                continue
            for node, dv in zip(chunk.nodes, results, strict=True):
                samples[node.name] = to_sample(node.name, node.type, dv)
        if shrunk:
            log.warning("%s: the server refused reads of its advertised size; reading at most %d nodes per Read",
                        self.config.name, self.max_nodes_per_read)
            self._build_chunks()
        self.health.last_round_trip_s = time.perf_counter() - began
        return [samples[name] for name in self._order]

    async def close(self) -> None:
        client, self._client = self._client, None
        self.health.connected = False
        if client is not None:
            await _abandon(client, graceful=True, timeout=self.settings.timeout)

    def _resolve(self) -> None:
        """Map every tag to a node id with the server's namespace indexes; build the Read chunks."""
        cfg = self.settings
        nodes: list[_Node] = []
        self._unresolved = {}
        for tag in cfg.tags:
            address = tag.node
            if address.namespace_index is not None:
                index = address.namespace_index
            else:
                uri = address.namespace_uri or cfg.namespace_uri
                if uri is None:
                    index = 0
                elif uri in self.namespace_array:
                    index = self.namespace_array.index(uri)
                else:
                    self._unresolved[tag.name] = f"namespace {uri!r} is not in the server's namespace array"
                    continue
            nodes.append(_Node(tag.name, tag.type, _node_id(address, index)))
        self._nodes = nodes
        self._build_chunks()

    def _build_chunks(self) -> None:
        """Prebuild the Read requests of one cycle, at most ``max_nodes_per_read`` nodes each."""
        nodes = self._nodes
        size = self.max_nodes_per_read or len(nodes) or 1
        self._chunks = [_chunk(nodes[i:i + size]) for i in range(0, len(nodes), size)]
        self.health.requests_per_cycle = len(self._chunks)

    def _unavailable(self, message: str) -> SourceUnavailable:
        self.health.connected = False
        self.health.last_error = message
        return SourceUnavailable(f"{self.config.name}: {message}")


def _chunk(nodes: Sequence[_Node]) -> _Chunk:
    params = ua.ReadParameters()
    params.MaxAge = 0
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    for node in nodes:
        rv = ua.ReadValueId()
        rv.NodeId = node.node_id
        rv.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(rv)
    return _Chunk(params, list(nodes))


async def _max_nodes_per_read(client: Client) -> int:
    """The server's MaxNodesPerRead operation limit; 0 (no limit) if it does not publish one."""
    node = client.get_node(ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)))
    try:
        value = await node.read_value()
    except UaStatusCodeError:
        return 0
    return value if isinstance(value, int) and value > 0 else 0


async def _abandon(client: Client, graceful: bool = False, timeout: float = 1.0) -> None:
    """Disconnect without raising; skip the polite goodbye when the link is already gone."""
    if graceful and client.uaclient.state is UaClientState.CONNECTED:
        try:
            await asyncio.wait_for(client.disconnect(), timeout=timeout)
            return
        except Exception:
            log.debug("graceful OPC UA disconnect failed", exc_info=True)
    try:
        # stops asyncua's supervisor tasks; the CloseSession it then sends fails on a dead link
        await asyncio.wait_for(client.close_session(), timeout=timeout)
    except Exception:
        log.debug("OPC UA close_session on a lost link failed", exc_info=True)
    client.disconnect_socket()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def create(config: SourceConfig) -> OpcUaDriver:
    """The :class:`~drivers.base.DriverSpec` factory."""
    if not isinstance(config, OpcUaSourceConfig):
        config = OpcUaSourceConfig.model_validate(config.model_dump())
    return OpcUaDriver(config)
