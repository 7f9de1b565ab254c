"""The OPC UA driver: poll mode (one Read per cycle) or subscription mode (monitored items).

**Poll.** asyncua's ``read_values`` neither splits by the server's ``MaxNodesPerRead`` nor
returns status codes and timestamps, so the driver builds the low-level ``ReadParameters`` once
at connect (chunked by the limit read from the server) and sends them with ``uaclient.read``.

**Subscription.** :meth:`OpcUaDriver.subscribe` creates one subscription with a monitored item
per node (see :mod:`drivers.opcua.subscription`); :meth:`OpcUaDriver.changes` hands over what
the server pushed. While waiting it watches the link (a closed socket, or asyncua's probe of the
server state failing, ends the wait with ``SourceUnavailable``) and the subscription: one silent
for longer than its watchdog (no data and no keep-alive) is deleted and created anew. After a
server restart the agent reconnects and subscribes again, the initial values included.

Either way each ``DataValue`` becomes a sample: the server's source timestamp is kept,
Good/Uncertain/Bad map to the sample's quality (the status name is the reason), and values that
are NaN, ±inf, of another type than configured or out of the configured integer range read as
bad quality. An unknown node (BadNodeIdUnknown) makes only its own tag bad.

Namespace URIs are resolved to indexes at connect, from the server's namespace array: indexes
may change when a server restarts, URIs do not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from blackbox.aio import checkpoint, wait_set
from blackbox.columns import SampleColumns
from blackbox.config.sources import SourceConfig
from blackbox.model import Quality, Sample, Value
from drivers.base import SourceHealth, SourceUnavailable
from drivers.opcua.config import OpcUaSourceConfig
from drivers.opcua.security import SecuritySetupError, apply_security
from drivers.opcua.subscription import Feed
from drivers.opcua.values import LINK_LOST_CODES, Node, decode, node_id

log = logging.getLogger(__name__)

for _name in ("asyncua", "asyncua.client", "asyncua.server"):
    _logger = logging.getLogger(_name)
    if _logger.getEffectiveLevel() < logging.WARNING:
        _logger.setLevel(logging.WARNING)  # INFO dumps whole service responses

_SC = ua.StatusCodes
_LIMITS = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
_ITEMS_LIMIT = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
LINK_GONE_STATUS = frozenset({"BadShutdown", "BadTimeout", "BadServerHalted", "BadConnectionClosed",
                              "BadSessionClosed", "BadSessionIdInvalid", "BadCommunicationError"})
"""Status changes of a subscription that mean the session or its link is gone."""
PENDING_LIMIT = 100_000
"""Most subscribed samples waiting for the agent (per source, at least 50 per tag); beyond, the
oldest are dropped and counted: the agent fell far behind, and memory must stay bounded."""


@dataclass(slots=True)
class _Chunk:
    """One Read service call: prebuilt parameters and the tags they read, in order."""

    params: ua.ReadParameters
    nodes: list[Node]


class OpcUaDriver:
    """An OPC UA server, polled or subscribed (see the module docstring)."""

    def __init__(self, config: OpcUaSourceConfig) -> None:
        self.config: SourceConfig = config  # the Driver protocol's view
        self.settings = config
        """The same configuration, with the protocol's own fields."""
        self.health = SourceHealth(details={"endpoint": config.endpoint, "mode": config.mode,
                                            "security": config.security})
        self.max_nodes_per_read = 0
        """Most nodes per Read: the server's MaxNodesPerRead, or less if it refused that (0: no limit)."""
        self.max_items_per_call = 0
        """The server's MaxMonitoredItemsPerCall (0: no limit)."""
        self.namespace_array: list[str] = []
        self._client: Client | None = None
        self._nodes: list[Node] = []
        self._chunks: list[_Chunk] = []
        self._unresolved: dict[int, str] = {}  # tag position -> why it has no node id
        self._tags = tuple(t.name for t in config.tags)  # the same tuple every cycle (see SampleColumns)
        self._feed: Feed | None = None
        self._pending: deque[Sample] = deque()
        self._pending_limit = max(PENDING_LIMIT, 50 * len(config.tags))
        self._wake = asyncio.Event()
        self._link_status: str | None = None
        self._latest: dict[str, Quality] = {}
        self._dropped = 0
        self._counted = 0  # losses of the current feed already added to health.lost

    @property
    def subscribes(self) -> bool:
        return self.settings.mode == "subscription"

    @property
    def session(self) -> Client | None:
        """The connected asyncua client (for diagnostics that browse or read arbitrary nodes)."""
        return self._client

    async def connect(self) -> None:
        cfg = self.settings
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
            async with asyncio.timeout(4 * cfg.timeout):
                await self._open(client)
        except asyncio.CancelledError:  # the socket may be open already: do not leave it behind
            client.disconnect_socket()
            raise
        except SecuritySetupError as exc:
            await _abandon(client)
            raise self._unavailable(str(exc)) from exc
        except (TimeoutError, OSError, UaError) as exc:
            await _abandon(client)
            raise self._unavailable(f"cannot connect to {cfg.endpoint}: {_describe(exc)}") from exc
        try:
            self.namespace_array = list(await client.get_namespace_array())
            self.max_nodes_per_read = await _operation_limit(client, _LIMITS)
            self.max_items_per_call = await _operation_limit(client, _ITEMS_LIMIT)
        except (TimeoutError, OSError, UaError) as exc:
            await _abandon(client)
            raise self._unavailable(f"connected to {cfg.endpoint} but cannot read its namespaces: "
                                    f"{_describe(exc)}") from exc
        self._resolve()
        self._client = client
        self._link_status = None
        self.health.connected = True

    async def _open(self, client: Client) -> None:
        await apply_security(client, self.settings)
        await client.connect()

    async def read(self) -> SampleColumns:
        """One sample per tag, in configuration order, as columns (a Read per chunk of nodes)."""
        client = self._client
        if client is None:
            raise self._unavailable("not connected")
        began = time.perf_counter()
        n = len(self._tags)
        # every tag is either unresolved or in exactly one chunk, which fills it in
        values: list[Value] = [None] * n
        qualities = [Quality.BAD] * n
        reasons: list[str | None] = [None] * n
        source_ts: list[int | None] = [None] * n
        for position, why in self._unresolved.items():
            reasons[position] = why

        def fail(nodes: list[Node], reason: str) -> None:
            for node in nodes:
                values[node.position], qualities[node.position], reasons[node.position] = None, Quality.BAD, reason
                source_ts[node.position] = None

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
                fail(chunk.nodes, reason)
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
                fail(chunk.nodes, reason)
                continue
            for node, dv in zip(chunk.nodes, results, strict=True):
                i = node.position
                values[i], qualities[i], reasons[i], source_ts[i] = decode(node.type, dv)
        if shrunk:
            log.warning("%s: the server refused reads of its advertised size; reading at most %d nodes per Read",
                        self.config.name, self.max_nodes_per_read)
            self._build_chunks()
        out = SampleColumns(self._tags, values, qualities, reasons, source_ts)
        self.health.last_round_trip_s = time.perf_counter() - began
        self.health.count(out)
        return out

    async def subscribe(self) -> None:
        client = self._client
        if client is None:
            raise self._unavailable("not connected")
        cfg = self.settings
        self._pending.clear()
        self._latest.clear()
        self._pending.extend(Sample(self._tags[i], None, Quality.BAD, why) for i, why in self._unresolved.items())
        feed = Feed(client, self._nodes, cfg, sink=self._push, on_status=self._status_changed,
                    max_items_per_call=self.max_items_per_call)
        began = time.perf_counter()
        try:
            async with asyncio.timeout(4 * cfg.timeout):
                refused = await feed.create()
        except (TimeoutError, OSError, UaError) as exc:
            await self.close()
            raise self._unavailable(f"cannot subscribe: {_describe(exc)}") from exc
        self.health.last_round_trip_s = time.perf_counter() - began
        self.health.requests_per_cycle = 0
        self._feed = feed
        self._counted = 0
        self._pending.extend(refused)
        self._update_details()
        if self._pending:
            self._wake.set()

    async def changes(self) -> list[Sample]:
        feed = self._feed
        if self._client is None or feed is None:
            raise self._unavailable("not subscribed")
        tick = min(1.0, feed.watchdog_s / 3)
        stalled = False
        while True:
            if self._pending:
                out = list(self._pending)
                self._pending.clear()
                for s in out:
                    self._latest[s.tag] = s.quality
                self.health.tally(self._latest.values())
                self._update_details()
                return out
            lost = self._link_lost()
            if lost is not None:
                await self.close()
                raise self._unavailable(lost)
            if not stalled and feed.silent_for() > feed.watchdog_s:
                await self._rebuild(feed)
                continue
            self._wake.clear()
            began = time.monotonic()
            await wait_set(self._wake, tick)  # or a tick: look at the link and the watchdog again
            checkpoint()  # asyncua's own waits may have swallowed a cancellation of this task
            # the event loop itself stalled (the agent was busy, not the server silent): read what
            # arrived meanwhile before the watchdog looks again
            stalled = time.monotonic() - began > 2 * tick

    async def close(self) -> None:
        client, self._client = self._client, None
        self._feed = None
        self.health.connected = False
        if client is not None:
            await _abandon(client, graceful=True, timeout=self.settings.timeout)

    def _push(self, samples: list[Sample]) -> None:
        """The feed's sink: queue for :meth:`changes`, bounded (see :data:`PENDING_LIMIT`)."""
        self._pending.extend(samples)
        excess = len(self._pending) - self._pending_limit
        if excess > 0:
            for _ in range(excess):
                self._pending.popleft()
            self._dropped += excess
            self.health.lost += excess
            log.error("%s: %d subscribed values dropped: the agent is not keeping up", self.config.name, excess)
        self._wake.set()

    def _status_changed(self, status: str) -> None:
        log.warning("%s: subscription status %s", self.config.name, status)
        if status in LINK_GONE_STATUS:
            self._link_status = status
            self._wake.set()

    def _link_lost(self) -> str | None:
        """Why the session's link is gone, or ``None`` while it looks alive."""
        client = self._client
        if client is None:
            return "not connected"
        if self._link_status is not None:
            return f"subscription reported {self._link_status}"
        protocol = client.uaclient.protocol
        if protocol is None or protocol.is_closed:
            return "connection closed by the server"
        if client.uaclient.state is not UaClientState.CONNECTED:
            return "connection lost (the server stopped answering)"
        return None

    async def _rebuild(self, feed: Feed) -> None:
        """Replace a subscription that went silent with a new one on the same session."""
        self.health.resubscribed += 1
        log.warning("%s: subscription %s silent for %.1f s (watchdog %.1f s); rebuilding it", self.config.name,
                    feed.subscription_id, feed.silent_for(), feed.watchdog_s)
        await feed.delete(self.settings.timeout)
        try:
            async with asyncio.timeout(4 * self.settings.timeout):
                refused = await feed.create()
        except (TimeoutError, OSError, UaError) as exc:
            await self.close()
            raise self._unavailable(f"cannot rebuild the silent subscription: {_describe(exc)}") from exc
        self._pending.extend(refused)
        self._update_details()

    def _update_details(self) -> None:
        feed = self._feed
        if feed is None:
            return
        lost = feed.overflows + feed.missed_messages
        self.health.lost += lost - self._counted
        self._counted = lost
        self.health.details.update({
            "subscription_id": feed.subscription_id, "publishing_interval_s": feed.publishing_interval_s,
            "watchdog_s": feed.watchdog_s, "notifications": feed.notifications, "overflows": feed.overflows,
            "missed_messages": feed.missed_messages, "dropped": self._dropped,
            "deadband_refused": feed.filter_fallbacks})

    def _resolve(self) -> None:
        """Map every tag to a node id with the server's namespace indexes; build the Read chunks."""
        cfg = self.settings
        nodes: list[Node] = []
        self._unresolved = {}
        for position, tag in enumerate(cfg.tags):
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
                    self._unresolved[position] = f"namespace {uri!r} is not in the server's namespace array"
                    continue
            nodes.append(Node(tag.name, tag.type, node_id(address, index), position))
        self._nodes = nodes
        self._build_chunks()
        self.health.details["max_nodes_per_read"] = self.max_nodes_per_read

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


def _chunk(nodes: Sequence[Node]) -> _Chunk:
    params = ua.ReadParameters()
    params.MaxAge = 0
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    for node in nodes:
        rv = ua.ReadValueId()
        rv.NodeId = node.node_id
        rv.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(rv)
    return _Chunk(params, list(nodes))


async def _operation_limit(client: Client, object_id: int) -> int:
    """One of the server's operation limits; 0 (no limit) if it does not publish it."""
    node = client.get_node(ua.NodeId(ua.Int32(object_id)))
    try:
        value = await node.read_value()
    except UaStatusCodeError:
        return 0
    return value if isinstance(value, int) and value > 0 else 0


async def _abandon(client: Client, graceful: bool = False, timeout: float = 1.0) -> None:
    """Disconnect without raising; skip the polite goodbye when the link is already gone."""
    if graceful and client.uaclient.state is UaClientState.CONNECTED:
        try:
            async with asyncio.timeout(timeout):
                await client.disconnect()
            return
        except Exception:
            log.debug("graceful OPC UA disconnect failed", exc_info=True)
    try:
        # stops asyncua's supervisor tasks; the CloseSession it then sends fails on a dead link
        async with asyncio.timeout(timeout):
            await client.close_session()
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
