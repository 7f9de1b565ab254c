"""Answers sent as the text the client prints (``status --json``), through a real control socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from blackbox.agent.control import PIECE_BYTES, Caller, ControlError, ControlServer, TextAnswer, write_in_pieces
from blackbox.control_client import CommandFailed, call_text

BIG = {"tags": [{"tag": f"PLC{k // 1000:02d}.T{k:05d}", "value": k / 7, "quality": "good"} for k in range(3000)]}
"""A result whose JSON line is far over the few kilobytes decoded with the standard library."""
TEXT = b"".join(b'{\n  "line": %d\n}\n' % k for k in range(200_000))
"""Megabytes of text with newlines in it: the answer must not be read as lines."""


def answering(result: Any) -> Callable[[dict[str, Any], Caller], Any]:
    async def handler(_args: dict[str, Any], _caller: Caller) -> Any:
        if isinstance(result, Exception):
            raise result
        return result

    return handler


@pytest.fixture
async def socket_path(tmp_path: Path) -> AsyncIterator[Path]:
    server = ControlServer(tmp_path / "agent.sock")
    for cmd, result in {"text": TextAnswer(TEXT), "empty": TextAnswer(b""), "small": {"a": [1, {}], "b": None},
                        "big": BIG, "refused": ControlError("no tag matches NOPE-*")}.items():
        server.register(cmd, answering(result))
    await server.start()
    try:
        yield server.path
    finally:
        await server.stop()


@pytest.mark.parametrize(("cmd", "printed"), [
    ("text", TEXT),  # as sent, byte for byte
    ("empty", b""),
    # an agent older than the command answers with a JSON result: printed as orjson indents it
    ("small", b'{\n  "a": [\n    1,\n    {}\n  ],\n  "b": null\n}\n'),
    ("big", orjson.dumps(BIG, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)),
])
async def test_a_text_answer_comes_back_as_the_bytes_to_print(socket_path: Path, cmd: str, printed: bytes) -> None:
    async with asyncio.timeout(20):
        assert await asyncio.to_thread(call_text, socket_path, cmd) == printed


async def test_a_refusal_or_an_unknown_command_is_the_agents_message(socket_path: Path) -> None:
    async with asyncio.timeout(20):
        with pytest.raises(CommandFailed, match=r"^no tag matches NOPE-\*$"):
            await asyncio.to_thread(call_text, socket_path, "refused")
        with pytest.raises(CommandFailed, match="unknown command 'nope'"):
            await asyncio.to_thread(call_text, socket_path, "nope")


@pytest.mark.parametrize(("sent", "error"), [
    (b'{"ok":true,"text_bytes":100}\nabc', "closed the connection after 3 of the 100 bytes of its answer to 'x'"),
    (b"", "closed the connection without answering 'x'"),
])
async def test_an_answer_cut_short_is_an_error_not_a_shorter_output(tmp_path: Path, sent: bytes, error: str) -> None:
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(sent)
        await writer.drain()
        writer.close()

    path = tmp_path / "agent.sock"
    server = await asyncio.start_unix_server(cut_short, path=str(path))
    try:
        async with asyncio.timeout(20):
            with pytest.raises(CommandFailed, match=error):
                await asyncio.to_thread(call_text, path, "x")
    finally:
        server.close()
        await server.wait_closed()


class RecordingWriter:
    """What :func:`write_in_pieces` asks of a stream writer, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: bytes | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    async def drain(self) -> None:
        self.calls.append(("drain", b""))


@pytest.mark.parametrize("size", [0, 1, PIECE_BYTES - 1, PIECE_BYTES, PIECE_BYTES + 1, 4 * PIECE_BYTES + 7])
async def test_an_answer_goes_out_a_piece_at_a_time_each_drained_before_the_next(size: int) -> None:
    """The transport of Python 3.11 moves what it holds on every partial send: it is never handed megabytes."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    writer = RecordingWriter()
    await write_in_pieces(cast("asyncio.StreamWriter", writer), data)
    writes = [piece for call, piece in writer.calls if call == "write"]
    assert b"".join(writes) == data
    assert [call for call, _ in writer.calls] == ["write", "drain"] * -(-size // PIECE_BYTES)
    assert all(0 < len(piece) <= PIECE_BYTES for piece in writes)
