"""The OPC UA side of the simulated line: EM-01 (emulsifier) and QC-01 (QC instruments).

Variables live under ``Objects/CreamLine/<unit>`` in the namespace :data:`~blackbox.sim.tags.NAMESPACE_URI`
with string node ids equal to the tag name (``ns=<idx>;s=EM-01.temperature``). Security policy
None and anonymous access only; the source timestamp is the wall-clock time the value was written.

:meth:`OpcUaServer.disconnect` drops every client connection and stops listening (a network cut:
the server keeps its sessions); :meth:`OpcUaServer.listen` ends it. :meth:`OpcUaServer.drop_subscriptions`
silently forgets the clients' subscriptions. A restart is :meth:`stop` and
:meth:`start` again, on the same port, with every session and subscription lost, and optionally
``extra_namespaces`` registered first, so that the cream line's namespace index changes as it may
on a real server whose configuration changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC

from asyncua import Node, Server, ua

from blackbox.model import Value
from blackbox.sim.process import Snapshot
from blackbox.sim.tags import NAMESPACE_URI, SimTag, opcua_tags

for _name in ("asyncua", "asyncua.server", "asyncua.common", "asyncua.uaprotocol"):
    logging.getLogger(_name).setLevel(logging.WARNING)

VARIANT_TYPES: dict[str, ua.VariantType] = {
    "Double": ua.VariantType.Double,
    "Float": ua.VariantType.Float,
    "String": ua.VariantType.String,
    "Int32": ua.VariantType.Int32,
    "UInt32": ua.VariantType.UInt32,
    "Boolean": ua.VariantType.Boolean,
}

WRITE_LAST = ("QC-01.sample_id",)
"""Trigger tags written after the values they announce, so one Read never sees a new sample id
with the previous sample's results."""

_GOOD = ua.StatusCode(ua.UInt32(ua.StatusCodes.Good))
_BAD = ua.StatusCode(ua.UInt32(ua.StatusCodes.BadSensorFailure))


def _node_id(name: str, namespace: int) -> ua.NodeId:
    # asyncua annotates with its int/str subclasses; the values encode the same
    return ua.NodeId(ua.String(name), ua.Int16(namespace))


class OpcUaServer:
    """An asyncua server serving ``tags`` from process snapshots."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4840, *, namespace_uri: str = NAMESPACE_URI,
                 tags: Iterable[SimTag] | None = None) -> None:
        self.host = host
        self.namespace_uri = namespace_uri
        tag_list = list(tags) if tags is not None else opcua_tags()
        self._tags = sorted(tag_list, key=lambda t: t.name in WRITE_LAST)
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._served: dict[str, tuple[Value, bool]] = {}
        self._port = port

    @property
    def port(self) -> int:
        """The port bound (the OS's choice when 0 was requested); the requested one before start."""
        return self._port

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    async def start(self, initial: Snapshot, *, extra_namespaces: int = 0) -> None:
        self._served.clear()
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self._port}")  # after a first start: the port bound then
        server.set_server_name("blackbox simulated cream line")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        for i in range(extra_namespaces):
            await server.register_namespace(f"urn:blackbox:sim:extra:{i}")
        idx = await server.register_namespace(self.namespace_uri)
        line = await server.nodes.objects.add_object(_node_id("CreamLine", idx), ua.QualifiedName("CreamLine", idx))
        units: dict[str, Node] = {}
        for tag in self._tags:
            unit = units.get(tag.unit)
            if unit is None:
                unit = await line.add_object(_node_id(tag.unit, idx), ua.QualifiedName(tag.unit, idx))
                units[tag.unit] = unit
            node_id = _node_id(tag.name, idx)
            variant = ua.Variant(initial.values[tag.name], VARIANT_TYPES[tag.type])
            var = await unit.add_variable(
                node_id, ua.QualifiedName(tag.name.split(".", 1)[1], idx), variant)
            if tag.description or tag.eng_unit:
                text = f"{tag.description} [{tag.eng_unit}]" if tag.eng_unit else tag.description
                await var.write_attribute(ua.AttributeIds.Description,
                                          ua.DataValue(ua.Variant(ua.LocalizedText(text.strip()))))
            self._nodes[tag.name] = node_id
        self._server = server
        await server.start()
        if server.bserver is not None and server.bserver.port:
            self._port = int(server.bserver.port)
        await self.publish(initial)

    async def publish(self, snapshot: Snapshot) -> None:
        """Write every value that changed (value or quality) since the last publish."""
        server = self._server
        if server is None:
            return
        now = ua.DateTime.now(UTC)
        await self._write(server, snapshot.values, snapshot.bad, now)

    async def _write(self, server: Server, values: Mapping[str, Value], bad: frozenset[str],
                     now: ua.DateTime) -> None:
        for tag in self._tags:
            value, is_bad = values[tag.name], tag.name in bad
            if self._served.get(tag.name) == (value, is_bad):
                continue
            self._served[tag.name] = (value, is_bad)
            dv = ua.DataValue(
                Value=ua.Variant(value, VARIANT_TYPES[tag.type]),
                StatusCode=_BAD if is_bad else _GOOD,
                SourceTimestamp=now,
                ServerTimestamp=now,
            )
            await server.write_attribute_value(self._nodes[tag.name], dv)

    async def disconnect(self) -> None:
        """Drop every client connection and stop listening; the server keeps running."""
        if self._server is not None and self._server.bserver is not None:
            await self._server.bserver.stop()

    async def listen(self) -> None:
        """Accept connections again after :meth:`disconnect`, on the same port."""
        if self._server is not None and self._server.bserver is not None:
            await self._server.bserver.start()

    async def drop_subscriptions(self) -> int:
        """Forget every client's subscriptions, sessions kept (as a PLC may after a program download);
        clients only notice the silence. Returns how many were dropped."""
        if self._server is None:
            return 0
        service = self._server.iserver.subscription_service
        ids = list(service.subscriptions)
        await service.delete_subscriptions(ids)
        return len(ids)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # asyncua's clock task sleeps 1 s between updates and stop() waits for it: cancel it instead
        clock = getattr(server.iserver, "time_task", None)
        if isinstance(clock, asyncio.Task):
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            server.iserver.time_task = None
        await server.stop()
