"""The Modbus TCP link on its own: the bytes it sends, and what it makes of each answer a device can give.

Answers are written out byte by byte here (MBAP header: transaction id, protocol id 0, length,
unit id; then the PDU), so the expected outcome never comes from the code under test.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from drivers.modbus.answer import Answer, LinkError
from drivers.modbus.planner import ReadRequest
from drivers.modbus.tcp import ModbusTcpError, TcpLink, decode_answer


def request(table: str = "hr", start: int = 0, count: int = 2, unit: int = 1) -> ReadRequest:
    return ReadRequest(unit_id=unit, table=table, start=start, count=count, tags=())  # type: ignore[arg-type]


Reply = Callable[[bytes], list[bytes] | None]
"""The chunks a device writes back for one request's bytes (``None``: it hangs up)."""


@asynccontextmanager
async def device(reply: Reply) -> AsyncIterator[tuple[TcpLink, list[bytes]]]:
    """A listening device that answers each 12-byte request with ``reply``'s chunks; a connected link to it."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                asked = await reader.readexactly(12)
                seen.append(asked)
                chunks = reply(asked)
                if chunks is None:
                    break
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.001)  # one chunk per read on the other side, as a slow device
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = TcpLink("127.0.0.1", port, timeout=0.5)
    try:
        async with asyncio.timeout(5):
            await link.connect()
        yield link, seen
    finally:
        link.close()
        server.close()
        await server.wait_closed()


def echo_tid(asked: bytes) -> bytes:
    return asked[:2]


async def read(link: TcpLink, req: ReadRequest) -> Answer:
    async with asyncio.timeout(5):
        return await link.read(req)


@pytest.mark.parametrize(("table", "function"), [("co", 1), ("di", 2), ("hr", 3), ("ir", 4)])
async def test_the_request_on_the_wire(table: str, function: int) -> None:
    async with device(lambda asked: [echo_tid(asked) + b"\x00\x00\x00\x03\x07" + bytes([function, 0])]) as (link, seen):
        await read(link, request(table, start=0x1234, count=0x7D, unit=7))
        await read(link, request(table, start=1, count=1, unit=7))
    assert seen == [
        b"\x00\x01" b"\x00\x00" b"\x00\x06" b"\x07" + bytes([function]) + b"\x12\x34" b"\x00\x7d",
        b"\x00\x02" b"\x00\x00" b"\x00\x06" b"\x07" + bytes([function]) + b"\x00\x01" b"\x00\x01",
    ]


async def test_an_answer_in_single_bytes_is_put_together() -> None:
    def one_byte_at_a_time(asked: bytes) -> list[bytes]:
        frame = echo_tid(asked) + b"\x00\x00\x00\x07\x01\x03\x04\x12\x34\xff\xfe"
        return [frame[i:i + 1] for i in range(len(frame))]

    async with device(one_byte_at_a_time) as (link, _):
        assert await read(link, request()) == Answer([0x1234, 0xFFFE], None)
        assert await read(link, request()) == Answer([0x1234, 0xFFFE], None)  # the next one too


async def test_an_answer_with_transaction_id_0_is_the_request_s() -> None:
    async with device(lambda _: [b"\x00\x00\x00\x00\x00\x05\x01\x03\x02\x00\x2a"]) as (link, _):
        assert await read(link, request(count=1)) == Answer([42], None)


async def test_unit_0_takes_an_answer_from_any_unit() -> None:
    async with device(lambda asked: [echo_tid(asked) + b"\x00\x00\x00\x05\x09\x03\x02\x00\x2a"]) as (link, _):
        assert await read(link, request(count=1, unit=0)) == Answer([42], None)


async def test_coils_come_lowest_bit_first_padded_to_whole_bytes() -> None:
    async with device(lambda asked: [echo_tid(asked) + b"\x00\x00\x00\x05\x01\x01\x02\x05\x80"]) as (link, _):
        answer = await read(link, request("co", count=9))
    assert answer == Answer([1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], None)


BROKEN = [
    # (what the device sends after echoing the transaction id, the error's words)
    (b"\x00\x01\x00\x05\x01\x03\x02\x00\x2a", "protocol id 1"),
    (b"\x00\x00\x00\x01\x01", "length 1"),
    (b"\x00\x00\x00\xff\x01" + bytes(255), "length 255"),
    (b"\x00\x00\x00\x05\x02\x03\x02\x00\x2a", "from unit 2, not unit 1"),
    (b"\x00\x00\x00\x05\x01\x04\x02\x00\x2a", "to function 4, not 3"),
    (b"\x00\x00\x00\x05\x01\x03\x04\x00\x2a", "says 4 bytes but holds 2"),
    (b"\x00\x00\x00\x04\x01\x83\x02\x00", "exception answer of 3 bytes"),
]


@pytest.mark.parametrize(("after_tid", "words"), BROKEN, ids=[w for _, w in BROKEN])
async def test_a_broken_answer_fails_the_request_and_closes_the_link(after_tid: bytes, words: str) -> None:
    async with device(lambda asked: [echo_tid(asked) + after_tid]) as (link, _):
        with pytest.raises(ModbusTcpError, match=words):
            await read(link, request(count=1))
        assert not link.connected
        with pytest.raises(ConnectionError, match="not connected"):
            await read(link, request(count=1))


async def test_an_answer_to_another_transaction_fails_the_request() -> None:
    async with device(lambda _: [b"\x12\x34\x00\x00\x00\x05\x01\x03\x02\x00\x2a"]) as (link, _):
        with pytest.raises(LinkError, match="transaction 4660, not 1"):
            await read(link, request(count=1))


async def test_an_exception_answer_gives_its_code() -> None:
    async with device(lambda asked: [echo_tid(asked) + b"\x00\x00\x00\x03\x01\x83\x02"]) as (link, _):
        assert await read(link, request()) == Answer((), 2)
        assert link.connected  # a refusal is an answer: the link stays up


async def test_silence_is_a_timeout_and_closes_the_link() -> None:
    async with device(lambda _: []) as (link, _):
        with pytest.raises(TimeoutError, match=r"no answer within 0\.5 s"):
            await read(link, request())
        assert not link.connected


async def test_a_hang_up_fails_the_request_at_once() -> None:
    async with device(lambda _: None) as (link, _):
        async with asyncio.timeout(0.4):  # before the link's own timeout of 0.5 s
            with pytest.raises(ConnectionError, match="closed by the device"):
                await link.read(request())


async def test_a_request_given_up_before_its_answer_makes_the_next_one_reconnect() -> None:
    async with device(lambda _: []) as (link, _):
        given_up = link.read(request())
        given_up.cancel()
        with pytest.raises(ConnectionError, match="given up before its answer"):
            await read(link, request())
        assert not link.connected


@pytest.mark.parametrize(("table", "pdu", "expected"), [
    ("hr", b"\x03\x00", Answer([], None)),
    ("hr", b"\x03\x03\x01\x02\x03", Answer([0x0102], None)),  # the odd byte is dropped, as pymodbus does
    ("ir", b"\x04\x02\x01\x02\xee\xee", Answer([0x0102], None)),  # bytes after the byte count's are ignored
    ("di", b"\x02\x01\xff", Answer([1] * 8, None)),
    ("co", b"\x81\x04", Answer((), 4)),
])
def test_decode_answer(table: str, pdu: bytes, expected: Answer) -> None:
    assert decode_answer(request(table), pdu) == expected


def test_the_largest_register_answer_decodes() -> None:
    registers = list(range(65535 - 125, 65535))
    pdu = bytes([3, 250]) + struct.pack(">125H", *registers)
    assert decode_answer(request(count=125), pdu) == Answer(registers, None)
