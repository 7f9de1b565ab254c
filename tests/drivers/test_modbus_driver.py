"""The Modbus driver against a real pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
from typing import Any

import pytest
from driver_helpers import StartModbus, by_name, modbus_source, sim_device

from blackbox.model import Quality, Sample
from drivers.base import SourceUnavailable
from drivers.modbus import SPEC, ModbusDriver, ModbusSourceConfig, encode

VALUES: dict[str, Any] = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3123456789,
    "int64": -1234567890123456789,
    "uint64": 12345678901234567890,
    "float32": 21.75,
    "float64": -2.718281828459045,
}
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]


def driver_for(port: int, tags: list[dict[str, Any]], **settings: Any) -> ModbusDriver:
    config = ModbusSourceConfig.model_validate(modbus_source(port, tags, **settings))
    driver = SPEC.factory(config)
    assert isinstance(driver, ModbusDriver)
    return driver


async def test_every_type_in_every_order_round_trips(modbus_server: StartModbus) -> None:
    registers: list[int] = []
    tags: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}

    def put(name: str, words: list[int], tag: dict[str, Any], value: Any) -> None:
        tags.append({"name": name, "address": f"hr:{len(registers)}", **tag})
        registers.extend(words)
        expected[name] = value

    for order in ORDERS:
        for data_type, value in VALUES.items():
            put(f"{data_type}.{order}", encode(value, data_type, order), {"type": data_type, "order": order}, value)
        status = encode(True, "bool", order, bit=9)[0] | encode(True, "bool", order, bit=2)[0]
        put(f"bit9.{order}", [status], {"type": "bool", "bit": 9, "order": order}, True)
        tags.append({"name": f"bit3.{order}", "address": f"hr:{len(registers) - 1}", "type": "bool", "bit": 3,
                     "order": order})
        expected[f"bit3.{order}"] = False
    for order in ("ABCD", "BADC"):
        put(f"string.{order}", encode("LOT-2026-é", "string", order, length=6),
            {"type": "string", "length": 6, "order": order}, "LOT-2026-é")
    # the input-register table decodes the same way
    ir = encode(VALUES["float64"], "float64", "CDAB") + encode(VALUES["int32"], "int32", "BADC")
    tags += [{"name": "ir.float64", "address": "ir:500", "type": "float64", "order": "CDAB"},
             {"name": "ir.int32", "address": "ir:504", "type": "int32", "order": "BADC"}]
    expected |= {"ir.float64": VALUES["float64"], "ir.int32": VALUES["int32"]}

    server = await modbus_server([sim_device(hr=[(0, registers)], ir=[(500, ir)])])
    driver = driver_for(server.port, tags)
    await driver.connect()
    try:
        samples = await driver.read()
    finally:
        await driver.close()

    assert [s.tag for s in samples] == [t["name"] for t in tags], "one sample per tag, in configuration order"
    assert {s.tag: s.value for s in samples} == expected
    assert all(s.quality is Quality.GOOD and s.reason is None and s.source_ts_us is None for s in samples)
    assert isinstance(by_name(samples)["int64.ABCD"].value, int)
    assert driver.health.requests_per_cycle == 2  # every hr tag merged into one request, the ir tags into one


async def test_scale_and_offset(modbus_server: StartModbus) -> None:
    server = await modbus_server([sim_device(hr=[(0, [250, *encode(-40, "int32"), *encode(1.5, "float32")])])])
    driver = driver_for(server.port, [
        {"name": "temp", "address": "hr:0", "type": "uint16", "scale": 0.1, "offset": -5.0},
        {"name": "pressure", "address": "hr:1", "type": "int32", "scale": 0.5},
        {"name": "speed", "address": "hr:3", "type": "float32", "offset": 100},
        {"name": "raw", "address": "hr:0", "type": "uint16"},
    ])
    await driver.connect()
    samples = by_name(await driver.read())
    await driver.close()
    assert samples["temp"].value == pytest.approx(20.0)
    assert samples["pressure"].value == -20.0
    assert samples["speed"].value == 101.5
    assert samples["raw"].value == 250 and isinstance(samples["raw"].value, int)


async def test_coils_and_discrete_inputs(modbus_server: StartModbus) -> None:
    coils = [i % 3 == 0 for i in range(40)]
    inputs = [i % 5 == 1 for i in range(20)]
    server = await modbus_server([sim_device(co=[(0, coils)], di=[(100, inputs)])])
    tags = [{"name": f"co{i}", "address": f"co:{i}", "type": "bool"} for i in (0, 1, 3, 17, 39)]
    tags += [{"name": f"di{i}", "address": f"di:{100 + i}", "type": "bool"} for i in (0, 1, 6, 19)]
    driver = driver_for(server.port, tags)
    await driver.connect()
    samples = by_name(await driver.read())
    await driver.close()
    assert {n: s.value for n, s in samples.items()} == {
        "co0": True, "co1": False, "co3": True, "co17": False, "co39": True,
        "di0": False, "di1": True, "di6": True, "di19": False,
    }
    assert [fc for _, fc, _, _ in server.requests] == [1, 2]  # one read coils, one read discrete inputs


async def test_an_exception_response_makes_only_that_requests_tags_bad(modbus_server: StartModbus) -> None:
    nan = encode(math.nan, "float32")
    server = await modbus_server([sim_device(hr=[(0, [7, 8, *nan, 0xFFFF, 0xFEFF])])])
    driver = driver_for(server.port, [
        {"name": "ok", "address": "hr:0", "type": "int16"},
        {"name": "missing.a", "address": "hr:1000", "type": "int16"},  # not served: illegal address
        {"name": "missing.b", "address": "hr:1001", "type": "float32"},
        {"name": "nan", "address": "hr:2", "type": "float32"},
        {"name": "garbage", "address": "hr:4", "type": "string", "length": 2},
        {"name": "ok2", "address": "hr:1", "type": "uint16"},
    ])
    await driver.connect()
    samples = by_name(await driver.read())
    assert samples["ok"] == Sample("ok", 7)
    assert samples["ok2"] == Sample("ok2", 8)
    # the merged request hr:1000-1002 was refused, split, and each half refused again
    for name, request in (("missing.a", "hr:1000-1000"), ("missing.b", "hr:1001-1002")):
        assert samples[name].quality is Quality.BAD and samples[name].value is None
        assert samples[name].reason == f"Modbus ILLEGAL_ADDRESS (2) reading unit 1 {request}"
    assert samples["nan"].quality is Quality.BAD and samples["nan"].reason == "float32 is NaN"
    assert samples["garbage"].quality is Quality.BAD and "UTF-8" in (samples["garbage"].reason or "")
    assert "ILLEGAL_ADDRESS" in (driver.health.last_error or "")
    assert driver.health.connected  # an exception response is the device talking: still connected
    # and the next cycle works as before
    assert by_name(await driver.read())["ok"].value == 7
    await driver.close()


async def test_a_learned_split_is_logged_with_the_requests_read_from_now_on(
        modbus_server: StartModbus, caplog: pytest.LogCaptureFixture) -> None:
    # hr:1000-1010 is refused, split at 1005; hr:1005-1010 is refused too and split at 1010: the
    # log must name the three requests of the new plan, not the intermediate hr:1005-1010
    server = await modbus_server([sim_device(hr=[(0, [7])])])
    driver = driver_for(server.port, [{"name": "ok", "address": "hr:0", "type": "int16"}] + [
        {"name": f"missing{a}", "address": f"hr:{a}", "type": "int16"} for a in (1000, 1005, 1010)])
    await driver.connect()
    with caplog.at_level(logging.WARNING, logger="drivers.modbus"):
        await driver.read()
    await driver.close()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [f"{driver.config.name}: the device refused unit 1 hr:1000-1010 (illegal data address); "
                       "reading it as unit 1 hr:1000-1000 and unit 1 hr:1005-1005 and unit 1 hr:1010-1010 "
                       "from now on"]


async def test_unit_id_per_tag(modbus_server: StartModbus) -> None:
    server = await modbus_server([sim_device(1, hr=[(0, [11])]), sim_device(2, hr=[(0, [22])]),
                                  sim_device(3, hr=[(0, [33])])])
    driver = driver_for(server.port, [
        {"name": "default", "address": "hr:0", "type": "int16"},
        {"name": "u3", "address": "hr:0", "type": "int16", "unit_id": 3},
    ], unit_id=2)
    await driver.connect()
    samples = by_name(await driver.read())
    await driver.close()
    assert samples["default"].value == 22
    assert samples["u3"].value == 33
    assert sorted(dev for dev, _, _, _ in server.requests) == [2, 3]


async def test_2000_float32_tags_take_33_requests(modbus_server: StartModbus) -> None:
    values = [i * 0.25 - 100 for i in range(2000)]
    registers = [w for v in values for w in encode(v, "float32", "CDAB")]
    server = await modbus_server([sim_device(hr=[(0, registers)])])
    tags = [{"name": f"f{i:04d}", "address": f"hr:{2 * i}", "type": "float32", "order": "CDAB"} for i in range(2000)]
    driver = driver_for(server.port, tags)
    await driver.connect()
    samples = await driver.read()
    await driver.close()
    assert [s.value for s in samples] == values
    assert len(server.requests) == 33 == driver.health.requests_per_cycle
    assert max(count for _, _, _, count in server.requests) == 124
    assert driver.health.last_round_trip_s is not None and driver.health.last_round_trip_s > 0


async def test_server_gone_raises_source_unavailable(modbus_server: StartModbus) -> None:
    server = await modbus_server([sim_device(hr=[(0, [1, 2, 3])])])
    driver = driver_for(server.port, [{"name": "a", "address": "hr:0", "type": "int16"}])
    await driver.connect()
    assert driver.health.connected
    assert (await driver.read())[0].value == 1
    await server.stop()
    with pytest.raises(SourceUnavailable, match="plc"):
        await driver.read()
    assert not driver.health.connected
    assert driver.health.last_error
    with pytest.raises(SourceUnavailable, match="cannot connect"):
        await driver.connect()


async def test_connect_to_a_closed_port_raises_source_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        driver = driver_for(port, [{"name": "a", "address": "hr:0", "type": "int16"}])
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            await driver.connect()
    with pytest.raises(SourceUnavailable, match="not connected"):
        await driver.read()


async def test_a_silent_device_times_out_after_the_source_timeout_not_pymodbus_defaults() -> None:
    received = bytearray()
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(100):  # never answers; ends when the client hangs up
            received.extend(chunk)
        hung_up.set()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    driver = driver_for(port, [{"name": "a", "address": "hr:0", "type": "int16"}], timeout=0.3)
    try:
        await driver.connect()
        # pymodbus' defaults (3 s, 3 retries) would take 12 s; the source's timeout is 0.3 s
        async with asyncio.timeout(5):
            with pytest.raises(SourceUnavailable):
                await driver.read()
            # the driver drops the connection, so a late answer can never be taken for the next request's
            await hung_up.wait()
    finally:
        await driver.close()
        listener.close()
        await listener.wait_closed()
    assert len(received) == 12, f"one read request (12 bytes of Modbus TCP), no retries: {bytes(received)!r}"


async def test_a_connection_dropped_mid_request_fails_fast() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    driver = driver_for(port, [{"name": "a", "address": "hr:0", "type": "int16"}], timeout=10.0)
    try:
        await driver.connect()
        async with asyncio.timeout(5):  # half the source's timeout: the loss is noticed, not waited out
            with pytest.raises(SourceUnavailable):
                await driver.read()
    finally:
        await driver.close()
        listener.close()
        await listener.wait_closed()


async def test_a_missing_serial_port_raises_source_unavailable(tmp_path: Any) -> None:
    config = ModbusSourceConfig.model_validate({
        "name": "bus", "protocol": "modbus", "transport": "rtu", "serial_port": str(tmp_path / "ttyUSB9"),
        "baudrate": 9600, "parity": "N", "stopbits": 2,
    })
    driver = ModbusDriver(config)
    with pytest.raises(SourceUnavailable, match=r"cannot connect to .*ttyUSB9 9600 8N2"):
        await driver.connect()
    assert not driver.health.connected


def test_float32_values_used_here_are_exact() -> None:
    # guards the equality assertions above: these values survive a float32 round trip unchanged
    for v in (VALUES["float32"], 1.5, *(i * 0.25 - 100 for i in range(2000))):
        assert struct.unpack(">f", struct.pack(">f", v))[0] == v
