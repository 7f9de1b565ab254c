"""The Modbus TCP link on its own: the bytes it sends, and what it makes of each answer a device can give.

Answers are written out byte by byte here (MBAP header: transaction id, protocol id 0, length,
unit id; then the PDU), so the expected outcome never comes from the code under test.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.modbus.answer import Answer, LinkError
from drivers.modbus.planner import ReadRequest
from drivers.modbus.tcp import ModbusTcpError, TcpLink, _Protocol, decode_answer


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
        [answer] = await link.read([req])
        return answer


@pytest.mark.parametrize(("table", "function"), [("co", 1), ("di", 2), ("hr", 3), ("ir", 4)])
async def test_the_request_on_the_wire(table: str, function: int) -> None:
    async with device(lambda asked: [echo_tid(asked) + b"\x00\x00\x00\x03\x07" + bytes([function, 0])]) as (link, seen):
        await read(link, request(table, start=0x1234, count=0x7D, unit=7))
        await read(link, request(table, start=1, count=1, unit=7))
    assert seen == [
        b"\x00\x01" b"\x00\x00" b"\x00\x06" b"\x07" + bytes([function]) + b"\x12\x34" b"\x00\x7d",
        b"\x00\x02" b"\x00\x00" b"\x00\x06" b"\x07" + bytes([function]) + b"\x00\x01" b"\x00\x01",
    ]


async def test_a_read_of_several_requests_sends_each_after_the_answer_before() -> None:
    def answer_with_the_start(asked: bytes) -> list[bytes]:
        return [echo_tid(asked) + b"\x00\x00\x00\x05\x01\x03\x02" + asked[8:10]]

    async with device(answer_with_the_start) as (link, seen):
        async with asyncio.timeout(5):
            answers = await link.read([request(start=s, count=1) for s in (7, 300, 9)])
        assert await link.read([]) == []
    assert answers == [Answer([7], None), Answer([300], None), Answer([9], None)]
    assert [asked[:2] + asked[8:10] for asked in seen] == [b"\x00\x01\x00\x07", b"\x00\x02\x01\x2c",
                                                          b"\x00\x03\x00\x09"]


async def test_a_failure_in_the_middle_of_a_read_names_its_request() -> None:
    def silent_for_the_second(asked: bytes) -> list[bytes]:
        return [] if asked[8:10] == b"\x00\x02" else [echo_tid(asked) + b"\x00\x00\x00\x05\x01\x03\x02\x00\x01"]

    async with device(silent_for_the_second) as (link, seen):
        with pytest.raises(TimeoutError, match=r"^unit 1 hr:2-2: no answer within 0\.5 s$"):
            async with asyncio.timeout(5):
                await link.read([request(start=s, count=1) for s in (1, 2, 3)])
    assert len(seen) == 2  # the third was never sent


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
                await link.read([request()])


async def test_a_request_given_up_before_its_answer_makes_the_next_one_reconnect() -> None:
    async with device(lambda _: []) as (link, _):
        given_up = link.read([request()])
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


async def test_an_answer_sent_twice_is_dropped_and_counted_and_the_link_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    def twice(asked: bytes) -> list[bytes]:
        frame = echo_tid(asked) + b"\x00\x00\x00\x05\x01\x03\x02\x00" + asked[11:12]  # the value: the count asked
        return [frame + frame]  # both in one segment: the second arrives while nothing waits

    with caplog.at_level(logging.DEBUG, logger="drivers.modbus.tcp"):
        async with device(twice) as (link, _):
            assert await read(link, request(count=1)) == Answer([1], None)
            assert await read(link, request(count=2)) == Answer([2], None)
            assert link.connected and link.dropped == 2
    dropped = [(r.levelno, r.getMessage()) for r in caplog.records if "dropped an answer" in r.getMessage()]
    assert [level for level, _ in dropped] == [logging.WARNING, logging.DEBUG]  # the first one only is a warning
    assert "transaction 1," in dropped[0][1] and "transaction 2," in dropped[1][1]


async def test_a_late_repeat_of_the_last_answer_is_dropped_while_the_next_request_waits() -> None:
    last: list[bytes] = []

    def repeat_first(asked: bytes) -> list[bytes]:
        frame = echo_tid(asked) + b"\x00\x00\x00\x05\x01\x03\x02\x00" + asked[11:12]
        chunks = [*last, frame]  # the previous answer again, then this one
        last[:] = [frame]
        return chunks

    async with device(repeat_first) as (link, _):
        assert await read(link, request(count=1)) == Answer([1], None)
        assert await read(link, request(count=3)) == Answer([3], None)
        assert link.dropped == 1


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """An answer as a device might get it wrong: any transaction, protocol id, length, unit, function, body."""
    tid = draw(st.sampled_from([1, 1, 1, 0, 2]) | st.integers(0, 0xFFFF))  # the request's is 1
    protocol_id = draw(st.sampled_from([0, 0, 0, 0, 0, 1]))
    unit = draw(st.sampled_from([1, 1, 1, 0, 2]))
    function = draw(st.sampled_from([3, 3, 3, 0x83, 4, 1]) | st.integers(0, 255))
    body = draw(st.sampled_from([b"", b"\x02", b"\x04\x00\x01\x00\x02", b"\x02\x00"]) | st.binary(max_size=12))
    length = draw(st.sampled_from([None, None, None, None, 0, 1, 255]) | st.integers(0, 300))
    pdu = bytes([function]) + body
    return struct.pack(">HHHB", tid, protocol_id, 1 + len(pdu) if length is None else length & 0xFFFF, unit) + pdu


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(frames(), max_size=4).map(b"".join) | st.binary(max_size=300),
       cuts=st.lists(st.integers(0, 300), max_size=6))
def test_whatever_bytes_arrive_the_request_gets_an_answer_an_error_or_keeps_waiting(stream: bytes,
                                                                                    cuts: list[int]) -> None:
    """Any bytes, cut anywhere: the protocol never raises anything but :class:`ModbusTcpError` into the request."""

    async def feed() -> None:
        transport = _Closing()
        protocol = _Protocol(timeout=5.0, on_drop=lambda _tid: None)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        waiting = protocol.send([request(count=2), request(count=1)])
        bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
        for a, b in pairwise(bounds):
            protocol.data_received(stream[a:b])
            if not protocol.open:
                break
        protocol.shut()
        if waiting.done():
            error = waiting.exception()
            assert error is None or isinstance(error, ModbusTcpError), repr(error)
        else:
            waiting.cancel()

    asyncio.run(feed())


class _Closing:
    """A transport that takes writes and a close."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass
