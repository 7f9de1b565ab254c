"""The OPC UA driver against a real asyncua server on loopback.

Starting an asyncua server costs ~1.2 s (it loads the standard address space), so one server
serves the module; tests that stop a server or need another configuration start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from driver_helpers import by_name

from blackbox.columns import SampleColumns
from blackbox.model import Quality
from drivers.base import SourceUnavailable
from drivers.opcua import SPEC, OpcUaDriver, OpcUaSourceConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "urn:blackbox:test:line1"
OTHER_NS = "urn:blackbox:test:other"
T1 = ua.DateTime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
T1_US = 1772600767123456
MAX_NODES_PER_READ = ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))

# name -> (variant type, value, status)
NODES: dict[str, tuple[ua.VariantType, Any, int]] = {
    "EM-01.temperature": (ua.VariantType.Double, 72.5, ua.StatusCodes.Good),
    "EM-01.vacuum": (ua.VariantType.Float, -5.8458405, ua.StatusCodes.Good),  # float32 -5.8458404541015625
    "EM-01.speed": (ua.VariantType.Int16, 1500, ua.StatusCodes.Good),
    "EM-01.count": (ua.VariantType.Int32, -7, ua.StatusCodes.Good),
    "EM-01.total": (ua.VariantType.Int64, 2**40, ua.StatusCodes.Good),
    "EM-01.u16": (ua.VariantType.UInt16, 65535, ua.StatusCodes.Good),
    "EM-01.u32": (ua.VariantType.UInt32, 4_000_000_000, ua.StatusCodes.Good),
    "EM-01.u64": (ua.VariantType.UInt64, 2**63 + 5, ua.StatusCodes.Good),
    "EM-01.running": (ua.VariantType.Boolean, True, ua.StatusCodes.Good),
    "EM-01.batch": (ua.VariantType.String, "B2026-001", ua.StatusCodes.Good),
    "EM-01.started": (ua.VariantType.DateTime, datetime(2026, 3, 4, 1, 2, 3, 456000, tzinfo=UTC),
                      ua.StatusCodes.Good),
    "EM-01.nan": (ua.VariantType.Double, math.nan, ua.StatusCodes.Good),
    "EM-01.uncertain": (ua.VariantType.Double, 1.0, ua.StatusCodes.UncertainLastUsableValue),
    "EM-01.failed": (ua.VariantType.Double, 0.0, ua.StatusCodes.BadSensorFailure),
}


@dataclass
class UaTestServer:
    server: Server
    endpoint: str
    ns_index: int
    reads: list[int] = field(default_factory=list)
    """Sizes of the Read service calls that touched the test namespace, in order."""
    refuse_above: int | None = None
    """Refuse larger Reads with BadTooManyOperations, whatever MaxNodesPerRead says."""

    async def stop(self) -> None:
        # asyncua's clock task sleeps 1 s between updates and stop() waits for it: cancel it instead
        task = self.server.iserver.time_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.server.iserver.time_task = None
        await self.server.stop()


class _Users(UserManager):
    """Anonymous sessions, and one user with a password; anyone else is refused."""

    def get_user(self, iserver: InternalServer, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            return User(role=UserRole.User)
        if (username, password) == ("operator", "s3cret"):
            return User(role=UserRole.User, name=username)
        return None


async def start_server() -> UaTestServer:
    server = Server(user_manager=_Users())
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/")
    other = await server.register_namespace(OTHER_NS)  # registered first, so NS is not at index 2
    idx = await server.register_namespace(NS)
    objects = server.nodes.objects
    for name, (vtype, value, status) in NODES.items():
        node = await objects.add_variable(ua.NodeId(ua.String(name), ua.Int16(idx)), name, ua.Variant(value, vtype))
        await node.write_value(ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(ua.UInt32(status)),
                                            SourceTimestamp=T1, ServerTimestamp=T1))
    await objects.add_variable(ua.NodeId(ua.Int32(5001), ua.Int16(idx)), "numeric",
                               ua.Variant(42, ua.VariantType.Int32))
    await objects.add_variable(ua.NodeId(ua.String("EM-01.temperature"), ua.Int16(other)), "other",
                               ua.Variant(999.0, ua.VariantType.Double))
    handle = UaTestServer(server, "", idx)

    def count(event: ServerItemCallback, _dispatcher: Any) -> None:
        nodes = event.request_params.NodesToRead
        if any(rv.NodeId.NamespaceIndex == idx for rv in nodes):
            handle.reads.append(len(nodes))
            if handle.refuse_above is not None and len(nodes) > handle.refuse_above:
                # a ServiceFault to the client; asyncua leaves the error's __init__ unannotated
                raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)  # type: ignore[no-untyped-call]

    server.subscribe_server_callback(CallbackType.PreRead, count)
    await server.start()
    assert server.bserver is not None  # started
    handle.endpoint = f"opc.tcp://127.0.0.1:{server.bserver.port}"
    return handle


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ua_server() -> AsyncIterator[UaTestServer]:
    handle = await start_server()
    yield handle
    await handle.stop()


def source(endpoint: str, tags: dict[str, tuple[str, str]], **settings: Any) -> OpcUaSourceConfig:
    """A source whose tags are name -> (address, type)."""
    return OpcUaSourceConfig.model_validate({
        "name": "ua", "protocol": "opcua", "endpoint": endpoint, "namespace_uri": NS, "timeout": 2.0, **settings,
        "tags": [{"name": n, "address": a, "type": t, "category": "process", "unit": "EM-01"}
                 for n, (a, t) in tags.items()],
    })


async def read_once(config: OpcUaSourceConfig) -> tuple[OpcUaDriver, SampleColumns]:
    driver = SPEC.factory(config)
    assert isinstance(driver, OpcUaDriver)
    await driver.connect()
    try:
        return driver, await driver.read()
    finally:
        await driver.close()


TYPED = {
    "temperature": ("s=EM-01.temperature", "Double"),
    "vacuum": ("s=EM-01.vacuum", "Double"),  # a Float node read as Double widens (its shortest decimal)
    "vacuum_f": ("s=EM-01.vacuum", "Float"),
    "speed": ("s=EM-01.speed", "Int16"),
    "count": ("s=EM-01.count", "Int32"),
    "total": ("s=EM-01.total", "Int64"),
    "u16": ("s=EM-01.u16", "UInt16"),
    "u32": ("s=EM-01.u32", "UInt32"),
    "u64": ("s=EM-01.u64", "UInt64"),
    "running": ("s=EM-01.running", "Boolean"),
    "batch": ("s=EM-01.batch", "String"),
    "started": ("s=EM-01.started", "DateTime"),
    "numeric": ("i=5001", "Int32"),
}


async def test_reads_every_type_with_its_source_timestamp(ua_server: UaTestServer) -> None:
    driver, samples = await read_once(source(ua_server.endpoint, TYPED))
    assert [s.tag for s in samples] == list(TYPED)
    got = by_name(samples)
    assert {n: s.value for n, s in got.items()} == {
        "temperature": 72.5, "vacuum": -5.8458405, "vacuum_f": -5.8458405, "speed": 1500, "count": -7, "total": 2**40,
        "u16": 65535, "u32": 4_000_000_000, "u64": 2**63 + 5, "running": True, "batch": "B2026-001",
        "started": "2026-03-04T01:02:03.456000Z", "numeric": 42,
    }
    assert all(s.quality is Quality.GOOD and s.reason is None for s in samples)
    for name in TYPED:
        if name != "numeric":
            assert got[name].source_ts_us == T1_US, name
    assert ua_server.reads[-1] == len(TYPED), "all nodes in one Read"
    assert driver.health.requests_per_cycle == 1


async def test_status_codes_and_bad_values_affect_only_their_tags(ua_server: UaTestServer) -> None:
    tags = {
        "good": ("s=EM-01.temperature", "Double"),
        "uncertain": ("s=EM-01.uncertain", "Double"),
        "failed": ("s=EM-01.failed", "Double"),
        "unknown": ("s=EM-01.no_such_node", "Double"),
        "nan": ("s=EM-01.nan", "Double"),
        "mismatch": ("s=EM-01.batch", "Double"),
        "too_big": ("s=EM-01.u16", "Int16"),
    }
    _, samples = await read_once(source(ua_server.endpoint, tags))
    got = by_name(samples)
    assert got["good"].quality is Quality.GOOD and got["good"].value == 72.5
    assert (got["uncertain"].quality, got["uncertain"].value, got["uncertain"].reason) == (
        Quality.UNCERTAIN, 1.0, "UncertainLastUsableValue")
    assert (got["failed"].quality, got["failed"].value, got["failed"].reason) == (
        Quality.BAD, None, "BadSensorFailure")
    assert got["failed"].source_ts_us == T1_US
    assert (got["unknown"].quality, got["unknown"].reason) == (Quality.BAD, "BadNodeIdUnknown")
    assert (got["nan"].quality, got["nan"].reason) == (Quality.BAD, "value is NaN")
    assert got["mismatch"].quality is Quality.BAD
    assert got["mismatch"].reason == "type mismatch: expected Double, server sent String 'B2026-001'"
    assert (got["too_big"].quality, got["too_big"].reason) == (Quality.BAD, "65535 is out of range for Int16")


async def test_namespace_uris_are_resolved_from_the_servers_namespace_array(ua_server: UaTestServer) -> None:
    tags = {
        "default_ns": ("s=EM-01.temperature", "Double"),
        "by_uri": (f"nsu={OTHER_NS};s=EM-01.temperature", "Double"),
        "by_index": (f"ns={ua_server.ns_index};s=EM-01.temperature", "Double"),
        "unknown_uri": ("nsu=urn:nowhere;s=EM-01.temperature", "Double"),
        "server_time": ("ns=0;i=2258", "DateTime"),
    }
    driver, samples = await read_once(source(ua_server.endpoint, tags))
    got = by_name(samples)
    assert ua_server.ns_index == 3 and driver.namespace_array.index(NS) == 3
    assert got["default_ns"].value == 72.5
    assert got["by_uri"].value == 999.0
    assert got["by_index"].value == 72.5
    assert got["unknown_uri"].quality is Quality.BAD
    assert got["unknown_uri"].reason == "namespace 'urn:nowhere' is not in the server's namespace array"
    assert got["server_time"].quality is Quality.GOOD and str(got["server_time"].value).endswith("Z")


async def test_reads_are_split_only_by_the_servers_max_nodes_per_read(ua_server: UaTestServer) -> None:
    limit = ua_server.server.get_node(MAX_NODES_PER_READ)
    config = source(ua_server.endpoint, TYPED)
    await limit.write_value(ua.Variant(4, ua.VariantType.UInt32))
    try:
        ua_server.reads.clear()
        driver, samples = await read_once(config)
    finally:
        await limit.write_value(ua.Variant(10000, ua.VariantType.UInt32))
    assert driver.max_nodes_per_read == 4
    assert ua_server.reads == [4, 4, 4, 1]  # 13 nodes
    assert driver.health.requests_per_cycle == 4
    assert [s.tag for s in samples] == list(TYPED)
    assert all(s.quality is Quality.GOOD for s in samples)


async def test_a_server_refusing_big_reads_it_did_not_announce_is_read_in_halves(ua_server: UaTestServer) -> None:
    driver = SPEC.factory(source(ua_server.endpoint, TYPED))
    assert isinstance(driver, OpcUaDriver)
    await driver.connect()
    ua_server.reads.clear()
    ua_server.refuse_above = 5
    try:
        first = await driver.read()
        second = await driver.read()
    finally:
        ua_server.refuse_above = None
        await driver.close()
    assert all(s.quality is Quality.GOOD for s in [*first, *second])
    assert [s.value for s in first] == [s.value for s in second]
    # cycle 1: 13 refused -> 6 refused -> 3 + 3; 7 refused -> 3 + 4. cycle 2: the learned size, 3
    assert ua_server.reads == [13, 6, 3, 3, 7, 3, 4, 3, 3, 3, 3, 1]
    assert driver.max_nodes_per_read == 3 and driver.health.requests_per_cycle == 5


async def test_username_and_password(ua_server: UaTestServer) -> None:
    tags = {"t": ("s=EM-01.temperature", "Double")}
    _, samples = await read_once(source(ua_server.endpoint, tags, username="operator", password="s3cret"))
    assert samples[0].value == 72.5
    driver = SPEC.factory(source(ua_server.endpoint, tags, username="operator", password="wrong"))
    with pytest.raises(SourceUnavailable, match="cannot connect") as raised:
        await driver.connect()
    assert "wrong" not in str(raised.value)
    assert not driver.health.connected


async def test_connect_to_nothing_raises_source_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        driver = SPEC.factory(source(f"opc.tcp://127.0.0.1:{port}", {"t": ("s=x", "Double")}))
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            await driver.connect()
    with pytest.raises(SourceUnavailable, match="not connected"):
        await driver.read()


async def test_server_stopped_raises_source_unavailable() -> None:
    handle = await start_server()
    driver = SPEC.factory(source(handle.endpoint, {"t": ("s=EM-01.temperature", "Double")}))
    try:
        await driver.connect()
        assert driver.health.connected
        assert (await driver.read())[0].value == 72.5
        await handle.stop()
        with pytest.raises(SourceUnavailable, match="read failed"):
            await driver.read()
        assert not driver.health.connected
        assert driver.health.last_error
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            await driver.connect()
    finally:
        await driver.close()


async def test_a_missing_client_certificate_is_named(tmp_path: Any) -> None:
    config = source("opc.tcp://127.0.0.1:4840", {}, security="SignAndEncrypt",
                    certificate=str(tmp_path / "cert.der"), private_key=str(tmp_path / "key.pem"))
    with pytest.raises(SourceUnavailable, match=r"cannot read certificate .*cert\.der: No such file"):
        await SPEC.factory(config).connect()
