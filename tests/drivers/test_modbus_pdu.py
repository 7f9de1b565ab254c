"""Register responses decoded in one step: the same registers as pymodbus' own decoder, or the same error."""

from __future__ import annotations

import random
import struct

import pytest
from driver_helpers import StartModbus, sim_device
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from drivers.modbus.pdu import HoldingRegistersResponse, InputRegistersResponse, register_fast_responses

PAIRS = [(HoldingRegistersResponse, ReadHoldingRegistersResponse), (InputRegistersResponse, ReadInputRegistersResponse)]


def frames() -> list[bytes]:
    rnd = random.Random(7)
    out = []
    for n in (0, 1, 2, 61, 124, 125):
        regs = [rnd.randrange(65536) for _ in range(n)] if n != 2 else [0, 65535]
        out.append(struct.pack(">B", 2 * n) + struct.pack(f">{n}H", *regs))
    out.append(bytes([3, 1, 2, 3, 4]))  # an odd byte count: the last byte is ignored by both
    return out


@pytest.mark.parametrize(("fast", "stock"), PAIRS, ids=["holding", "input"])
@pytest.mark.parametrize("frame", frames(), ids=lambda f: f"{f[0]}-bytes")
def test_the_fast_response_decodes_what_pymodbus_decodes(fast: type, stock: type, frame: bytes) -> None:
    ours, theirs = fast(), stock()
    ours.decode(frame)
    theirs.decode(frame)
    assert ours.registers == theirs.registers
    assert ours.function_code == theirs.function_code
    assert f"registers={len(theirs.registers)})" in str(ours)


@pytest.mark.parametrize(("fast", "stock"), PAIRS, ids=["holding", "input"])
def test_a_byte_count_beyond_the_frame_is_the_same_error(fast: type, stock: type) -> None:
    frame = bytes([8, 0, 1])
    for cls in (fast, stock):
        with pytest.raises(ModbusIOException, match="byte_count 8 > length of packet 3"):
            cls().decode(frame)


async def test_a_client_with_the_fast_responses_decodes_real_responses_in_one_step(modbus_server: StartModbus) -> None:
    """The serial link's pymodbus client decodes so; a TCP client shows pymodbus' extension point at work."""
    regs = list(range(100, 220))
    server = await modbus_server([sim_device(hr=[(0, regs)], ir=[(0, regs[::-1])])])
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=5)
    register_fast_responses(client)
    await client.connect()
    try:
        holding = await client.read_holding_registers(0, count=120, device_id=1)
        inputs = await client.read_input_registers(0, count=120, device_id=1)
    finally:
        client.close()
    assert type(holding) is HoldingRegistersResponse and holding.registers == regs
    assert type(inputs) is InputRegistersResponse and inputs.registers == regs[::-1]
