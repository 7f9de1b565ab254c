"""Modbus TCP reads on an asyncio protocol of our own: the MBAP framing and the four read functions.

Why not pymodbus' TCP client: its transaction manager, framer and tracing cost about 100 µs of CPU
per request on top of the socket's own cost (measured: 96-107 µs user time per 124-register read
against 37-41 µs here, the same server and machine). A gateway polling 10,000 tags every 0.1 s
sends about 1,600 requests a second, so that difference was a quarter of the agent's CPU. The
protocol is small and fixed (the Modbus Application Protocol over TCP, v1.1b3, section 4 and the
read functions 1 to 4), and every way a device can get it wrong is handled below. Serial (RTU) lines
keep pymodbus' client (:mod:`drivers.modbus.serial`).

One request at a time per connection (a link carries one; see :mod:`drivers.modbus.client`).
An answer is matched to its request by transaction id (an answer with transaction id 0 is taken as
that request's: some gateways never echo it, and pymodbus accepts it too) and by unit id, unless the
request was sent to unit 0. A well-framed answer that arrives while no request waits, or repeats
the transaction just answered (some gateways send an answer twice), is dropped and counted
(:attr:`TcpLink.dropped`; logged once per connection). Anything that breaks the framing or answers
another request makes :class:`ModbusTcpError`, and the connection is closed: after that, nothing
that arrives on it can be trusted to belong to the next request.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence
from typing import cast

from drivers.modbus.answer import Answer, LinkError, naming
from drivers.modbus.config import BIT_TABLES
from drivers.modbus.planner import ReadRequest

log = logging.getLogger(__name__)

FUNCTION = {"co": 1, "di": 2, "hr": 3, "ir": 4}
"""Modbus function code of a read of each table."""
MAX_LENGTH = 254
"""The largest MBAP length field: a 260-byte ADU (7-byte header, 253-byte PDU) less the 6 bytes before the unit id."""
_REQUEST = struct.Struct(">HHHBBHH")
"""Transaction id, protocol id 0, length 6, unit id, function code, start address, count."""
_HEADER = struct.Struct(">HHHB")
"""Transaction id, protocol id, length, unit id."""


class ModbusTcpError(LinkError):
    """The device's answer breaks the protocol: the connection is closed."""


class TcpLink:
    """A Modbus TCP connection to one device or gateway (see the module docstring)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._protocol: _Protocol | None = None
        self.dropped = 0
        """Well-framed answers dropped: none was awaited, or they repeated the one just answered."""

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.open

    async def connect(self) -> None:
        """Open the connection within the timeout; ``OSError`` or ``TimeoutError`` if it cannot be."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            _, protocol = await loop.create_connection(lambda: _Protocol(self.timeout, self._drop), self.host,
                                                       self.port)
        self._protocol = protocol

    def read(self, requests: Sequence[ReadRequest]) -> asyncio.Future[list[Answer]]:
        """Send the reads one after another, each as soon as the one before is answered; the future gives
        their :class:`Answer` s in order, or raises ``TimeoutError``, ``ConnectionError`` (the connection
        was lost) or :class:`ModbusTcpError`, naming the request."""
        protocol = self._protocol
        if protocol is None or not protocol.open:
            return _failed(ConnectionError("not connected"))
        return protocol.send(requests)

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.shut()

    def _drop(self, tid: int) -> None:
        self.dropped += 1
        log.log(logging.WARNING if self.dropped == 1 else logging.DEBUG,
                "Modbus TCP %s:%d: dropped an answer to transaction %d, which no request waits for (a repeated or "
                "unsolicited answer; further ones are logged at debug level)", self.host, self.port, tid)


class _Protocol(asyncio.Protocol):
    """The byte stream of one connection, cut into answers.

    The requests of one :meth:`send` are chained here, each written from :meth:`data_received` as
    the answer before it is taken, and the caller is woken once, with every answer: not once per
    request (a future, a task wake-up and a turn of the event loop each, about a fifth of a
    request's CPU at 1,600 requests a second).

    The timeout is watched by one timer per connection rather than one per request: it fires at the
    deadline of the request in flight when it was set and, if that request was answered meanwhile,
    is set again for the one in flight then.
    """

    def __init__(self, timeout: float, on_drop: Callable[[int], None]) -> None:
        self.timeout = timeout
        self._on_drop = on_drop
        self.open = False
        self._transport: asyncio.Transport | None = None
        self._received = bytearray()
        self._tid = 0
        self._answered_tid: int | None = None
        self._waiting: asyncio.Future[list[Answer]] | None = None
        self._requests: Sequence[ReadRequest] = ()
        self._answers: list[Answer] = []
        self._request: ReadRequest | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport, self.open = cast(asyncio.Transport, transport), True  # a stream: create_connection

    def send(self, requests: Sequence[ReadRequest]) -> asyncio.Future[list[Answer]]:
        if self._waiting is not None:  # a read given up before its answers came: they may still come
            self._fail(ConnectionError("a read was given up before its answers"))
            return _failed(ConnectionError("the previous read was given up before its answers: reconnect"))
        waiting = self._waiting = asyncio.get_running_loop().create_future()
        self._requests, self._answers = requests, []
        if requests:
            self._send(requests[0])
        else:
            self._settle()
            waiting.set_result([])
        return waiting

    def _send(self, request: ReadRequest) -> None:
        if self._transport is None:
            raise RuntimeError("internal error: send before the connection is made")
        loop = asyncio.get_running_loop()
        self._tid = self._tid % 0xFFFF + 1  # 1..65535: 0 is what a device that never echoes it sends
        self._request = request
        self._deadline = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._watch)
        self._transport.write(_REQUEST.pack(self._tid, 0, 6, request.unit_id, FUNCTION[request.table],
                                            request.start, request.count))

    def data_received(self, data: bytes) -> None:
        received = self._received
        received += data
        while len(received) >= 7:
            tid, protocol_id, length, unit = _HEADER.unpack_from(received)
            if protocol_id != 0 or not 2 <= length <= MAX_LENGTH:
                self._fail(ModbusTcpError(f"not a Modbus TCP answer (protocol id {protocol_id}, length {length})"))
                return
            end = 6 + length
            if len(received) < end:
                return
            pdu = bytes(received[7:end])
            del received[:end]
            self._answer(tid, unit, pdu)
            if not self.open:
                return

    def _answer(self, tid: int, unit: int, pdu: bytes) -> None:
        request, waiting = self._request, self._waiting
        if request is None or waiting is None or tid == self._answered_tid:
            self._on_drop(tid)
            return
        if tid not in (0, self._tid):
            self._fail(ModbusTcpError(f"the answer is to transaction {tid}, not {self._tid}"))
            return
        if request.unit_id and unit != request.unit_id:
            self._fail(ModbusTcpError(f"the answer is from unit {unit}, not unit {request.unit_id}"))
            return
        try:
            answer = decode_answer(request, pdu)
        except ModbusTcpError as exc:
            self._fail(exc)
            return
        self._answered_tid = tid or None  # a device that answers with 0 every time repeats nothing
        answers = self._answers
        answers.append(answer)
        if len(answers) < len(self._requests):
            self._send(self._requests[len(answers)])
            return
        self._settle()
        if not waiting.done():  # done: the read was given up (cancelled); its answers are dropped
            waiting.set_result(answers)

    def _watch(self) -> None:
        self._timer = None
        if self._waiting is None:
            return  # idle: the next request sets the timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._fail(TimeoutError(f"no answer within {self.timeout:g} s"))
        else:
            self._timer = loop.call_at(self._deadline, self._watch)

    def _fail(self, exc: Exception) -> None:
        """Fail the read in flight (if any), naming its request, and close: the stream can no longer be trusted."""
        waiting, request = self._waiting, self._request
        self._settle()
        if waiting is not None and not waiting.done():
            waiting.set_exception(exc if request is None else naming(request, exc))
        self.shut()

    def _settle(self) -> None:
        self._waiting = self._request = None
        self._requests, self._answers = (), []

    def shut(self) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._waiting is not None:
            self._fail(ConnectionError(f"connection lost: {exc}" if exc else "connection closed by the device"))


def _failed(exc: Exception) -> asyncio.Future[list[Answer]]:
    future: asyncio.Future[list[Answer]] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def decode_answer(request: ReadRequest, pdu: bytes) -> Answer:
    """The answer a PDU gives to ``request``: its registers or bits, or the device's exception code.

    A count of values other than the request's is given as it came (the driver's blocks report a
    short answer as bad quality; bits come padded to whole bytes, as on the wire). As in pymodbus,
    bytes after the byte count's are ignored, and so is the odd byte of an odd count of register bytes.
    """
    function = FUNCTION[request.table]
    if pdu[0] == function | 0x80:
        if len(pdu) != 2:
            raise ModbusTcpError(f"an exception answer of {len(pdu)} bytes instead of 2")
        return Answer((), pdu[1])
    if pdu[0] != function:
        raise ModbusTcpError(f"the answer is to function {pdu[0]}, not {function}")
    if len(pdu) < 2:
        raise ModbusTcpError("an answer without a byte count")
    byte_count = pdu[1]
    if byte_count > len(pdu) - 2:
        raise ModbusTcpError(f"the answer says {byte_count} bytes but holds {len(pdu) - 2}")
    if request.table in BIT_TABLES:
        return Answer(unpack_bits(pdu[2:2 + byte_count]), None)
    return Answer(list(struct.unpack_from(f">{byte_count // 2}H", pdu, 2)), None)


def unpack_bits(packed: bytes) -> list[int]:
    """Coils or inputs as 0/1, the first in the lowest bit of the first byte (8 per byte, padding included)."""
    return [byte >> i & 1 for byte in packed for i in range(8)]
