"""The Modbus driver against a device that answers nonsense: byte counts that lie, too few or too
many registers, odd lengths, exception codes that do not exist, other function codes, transaction
or unit ids of another request, MBAP lengths that lie, random bytes, answers cut short, two answers
at once, silence, a hang-up.

Whatever comes back, ``read()`` gives one sample per tag — good with a value of the tag's type, or
bad/uncertain with a reason — or raises ``SourceUnavailable`` (the agent then reconnects with
back-off). Never another exception. The device's choices come from a fixed seed.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
from collections import Counter
from typing import Any

from test_modbus_driver import driver_for

from blackbox.model import Quality
from drivers.base import SourceUnavailable

CYCLES = 200
KINDS = ["valid"] * 6 + ["short", "long", "odd", "count-lies", "exception", "wrong-fc", "wrong-tid", "wrong-unit",
                         "mbap-short", "mbap-long", "garbage", "close", "cut", "two", "huge", "silence", "empty"]
TAGS: list[dict[str, Any]] = [
    {"name": "i16", "address": "hr:0", "type": "int16"},
    {"name": "u32", "address": "hr:1", "type": "uint32"},
    {"name": "f32", "address": "hr:3", "type": "float32"},
    {"name": "f64", "address": "hr:5", "type": "float64", "order": "DCBA"},
    {"name": "txt", "address": "hr:9", "type": "string", "length": 4},
    {"name": "bit", "address": "hr:11", "type": "bool", "bit": 3},
    {"name": "scaled", "address": "ir:0", "type": "int32", "scale": 0.1, "offset": -5},
    {"name": "coil", "address": "co:7", "type": "bool"},
    {"name": "input", "address": "di:3", "type": "bool"},
]
TYPES = {"i16": int, "u32": int, "f32": float, "f64": float, "txt": str, "bit": bool, "scaled": float, "coil": bool,
         "input": bool}


def answer(rng: random.Random, kind: str, tid: int, unit: int, pdu: bytes) -> bytes | None:
    """The bytes a nonsense device sends back for one request (``None``: hang up)."""
    fc = pdu[0]
    count = struct.unpack(">H", pdu[3:5])[0] if len(pdu) >= 5 else 1
    nbytes = (count + 7) // 8 if fc in (1, 2) else 2 * count
    data = rng.randbytes(nbytes)
    body = bytes([fc, nbytes & 0xFF]) + data
    if kind == "short":
        body = bytes([fc, max(nbytes - 2, 0)]) + data[:-2]
    elif kind == "long":
        body = bytes([fc, min(nbytes + 4, 255)]) + data + rng.randbytes(4)
    elif kind == "odd":
        body = bytes([fc, nbytes + 1]) + data + b"\x00"
    elif kind == "count-lies":
        body = bytes([fc, rng.randrange(256)]) + data
    elif kind == "exception":
        body = bytes([fc | 0x80, rng.randrange(256)])
    elif kind == "wrong-fc":
        body = bytes([rng.choice([1, 2, 3, 4, 5, 6, 15, 16, 43, 0x7F, 0])]) + body[1:]
    elif kind == "wrong-tid":
        tid = (tid + rng.randrange(1, 100)) & 0xFFFF
    elif kind == "wrong-unit":
        unit = (unit + 1) & 0xFF
    elif kind == "garbage":
        return rng.randbytes(rng.randrange(1, 40))
    elif kind == "close":
        return None
    elif kind == "huge":
        body = bytes([fc, 255]) + rng.randbytes(255)
    elif kind == "empty":
        body = b""
    length = len(body) + 1
    if kind == "mbap-short":
        length = max(length - rng.randrange(1, 4), 0)
    elif kind == "mbap-long":
        length += rng.randrange(1, 10)
    frame = struct.pack(">HHHB", tid, 0, length & 0xFFFF, unit) + body
    if kind == "cut":
        return frame[: rng.randrange(1, len(frame))]
    if kind == "two":
        return frame + frame
    return frame


async def test_a_device_answering_nonsense_gives_bad_readings_or_a_lost_link_never_a_crash() -> None:
    rng = random.Random(20261204)
    kinds_sent: Counter[str] = Counter()

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(max(length - 1, 0))
                kind = rng.choice(KINDS)
                kinds_sent[kind] += 1
                if kind == "silence":
                    continue
                out = answer(rng, kind, tid, unit, pdu)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if kind == "cut":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(device, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    driver = driver_for(port, TAGS, timeout=0.1)
    outcomes: Counter[str] = Counter()
    try:
        async with asyncio.timeout(120):
            for _ in range(CYCLES):
                try:
                    await driver.connect()
                    samples = await driver.read()
                except SourceUnavailable as exc:
                    assert str(exc), "SourceUnavailable without a reason"
                    outcomes["unavailable"] += 1
                    await driver.close()
                    continue
                assert [s.tag for s in samples] == [t["name"] for t in TAGS]
                for s in samples:
                    if s.quality is Quality.GOOD:
                        assert type(s.value) is TYPES[s.tag], s
                        assert not isinstance(s.value, float) or math.isfinite(s.value), s
                        assert "\x00" not in str(s.value), s
                    else:
                        assert isinstance(s.reason, str) and s.reason, s
                    outcomes[s.quality.value] += 1
                await driver.close()
    finally:
        await driver.close()
        listener.close()
        await listener.wait_closed()
    print(f"nonsense Modbus device: sent {dict(kinds_sent)}; driver gave {dict(outcomes)}")
    assert outcomes["unavailable"] > 0 and outcomes["good"] > 0 and outcomes["bad"] > 0, outcomes
