"""The OPC UA driver against a server whose variables hold nonsense: values of another type,
arrays, nulls, NaN and infinities, integers out of range, huge strings, strings with NUL, byte
strings, extreme dates, random status codes (reserved bits included), timestamps far in the past
or future.

Every read gives one sample per tag — good with a finite value of the tag's type, or bad/uncertain
with a reason — or raises ``SourceUnavailable``; never another exception. Then the agent's own
``sanitize`` (what every sample passes before the buffer) leaves nothing a sealed batch cannot
hold. The server's choices come from a fixed seed.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua import ua
from test_opcua_driver import NS, UaTestServer, source, start_server

from blackbox.agent.recorder import sanitize
from blackbox.model import Quality
from blackbox.seal.records import INT_MAX, INT_MIN
from drivers.base import SourceUnavailable
from drivers.opcua import SPEC, OpcUaDriver

pytestmark = pytest.mark.asyncio(loop_scope="module")

CYCLES = 25
TYPES = {"Double": float, "Float": float, "Int16": int, "Int32": int, "Int64": int, "UInt16": int, "UInt32": int,
         "UInt64": int, "Boolean": bool, "String": str, "DateTime": str}
V = ua.VariantType


def nonsense(rng: random.Random) -> ua.Variant:
    kind = rng.randrange(16)
    if kind == 0:
        return ua.Variant(rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]), V.Double)
    if kind == 1:
        return ua.Variant(rng.choice([math.nan, 3.4e38, -1.5]), V.Float)
    if kind == 2:
        return ua.Variant(rng.choice([-(2**63), 2**63 - 1, 0]), V.Int64)
    if kind == 3:
        return ua.Variant(rng.choice([0, 2**64 - 1, 2**63]), V.UInt64)
    if kind == 4:
        return ua.Variant(rng.choice([-32768, 32767]), V.Int16)
    if kind == 5:
        return ua.Variant(rng.choice(["", "a\x00b", "\x00" * 10, "é🧴" * 100, "x" * rng.choice([10, 70_000, 2_000_000]),
                                      "\n\t\r", "\u202e"]), V.String)
    if kind == 6:
        return ua.Variant(rng.randbytes(rng.randrange(0, 300)), V.ByteString)
    if kind == 7:
        return ua.Variant([rng.random() for _ in range(rng.randrange(0, 5))], V.Double)  # an array
    if kind == 8:
        return ua.Variant(None, V.Null)
    if kind == 9:
        return ua.Variant(rng.choice([datetime(1601, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC),
                                      datetime(1970, 1, 1), datetime(2026, 1, 1, tzinfo=UTC)]), V.DateTime)
    if kind == 10:
        return ua.Variant(rng.random() < 0.5, V.Boolean)
    if kind == 11:
        return ua.Variant(ua.LocalizedText("text", "en"), V.LocalizedText)
    if kind == 12:
        return ua.Variant(uuid.UUID(int=rng.getrandbits(128)), V.Guid)
    if kind == 13:
        return ua.Variant(ua.QualifiedName("q", 1), V.QualifiedName)
    if kind == 14:
        return ua.Variant(rng.randrange(256), V.Byte)
    return ua.Variant(rng.uniform(-1e6, 1e6), V.Double)


def status(rng: random.Random) -> ua.StatusCode:
    code = rng.choice([ua.StatusCodes.Good, ua.StatusCodes.Good, ua.StatusCodes.UncertainLastUsableValue,
                       ua.StatusCodes.BadSensorFailure, rng.getrandbits(32), 0x0000_0400, 0x4000_0080])
    return ua.StatusCode(ua.UInt32(code))


def timestamp(rng: random.Random) -> ua.DateTime | None:
    return rng.choice([None, ua.DateTime(1601, 1, 1, tzinfo=UTC), ua.DateTime(9999, 12, 31, 23, 59, tzinfo=UTC),
                       ua.DateTime.now(UTC), ua.DateTime.now(UTC) + timedelta(days=365 * 100)])


async def test_a_server_holding_nonsense_gives_bad_readings_with_reasons_never_a_crash() -> None:
    server: UaTestServer = await start_server()
    rng = random.Random(20261204)
    idx = await server.server.register_namespace(NS)
    objects = server.server.nodes.objects
    names = [f"fz.{t}.{i}" for t in TYPES for i in range(2)]
    nodes = [await objects.add_variable(ua.NodeId(ua.String(n), ua.Int16(idx)), n, ua.Variant(0.0, V.Double))
             for n in names]
    config = source(server.endpoint, {n: (f"s={n}", n.split(".")[1]) for n in names}, timeout=5.0)
    driver = SPEC.factory(config)
    assert isinstance(driver, OpcUaDriver)
    counts = {"good": 0, "uncertain": 0, "bad": 0, "unavailable": 0}
    try:
        async with asyncio.timeout(180):
            await read_nonsense(server, driver, nodes, names, rng, counts)
    finally:
        await driver.close()
        await server.stop()
    print(f"nonsense OPC UA server: {counts}")
    assert counts["good"] > 0 and counts["bad"] > 0, counts


async def read_nonsense(server: UaTestServer, driver: OpcUaDriver, nodes: list[Any], names: list[str],
                        rng: random.Random, counts: dict[str, int]) -> None:
    for _ in range(CYCLES):
        for node in nodes:
            dv = ua.DataValue(nonsense(rng), StatusCode=status(rng), SourceTimestamp=timestamp(rng))
            await server.server.write_attribute_value(node.nodeid, dv)
        try:
            if not driver.health.connected:
                await driver.connect()
            samples = await driver.read()
        except SourceUnavailable as exc:
            assert str(exc)
            counts["unavailable"] += 1
            continue
        assert [s.tag for s in samples] == names
        for s in samples:
            want = TYPES[s.tag.split(".")[1]]
            if s.quality is Quality.GOOD:
                assert type(s.value) is want, s
                assert not isinstance(s.value, float) or math.isfinite(s.value), s
            else:
                assert isinstance(s.reason, str) and s.reason, s
            assert s.source_ts_us is None or INT_MIN <= s.source_ts_us <= INT_MAX, s
            counts[s.quality.value] += 1
        for s in sanitize(samples):  # what the agent keeps
            assert not isinstance(s.value, str) or "\x00" not in s.value, s
            assert s.reason is None or "\x00" not in s.reason, s
