"""Client side of the agent's control socket (see :mod:`blackbox.agent.control`).

The standard library's JSON by default: it loads in a fraction of the time orjson takes (about
15 ms of CPU, a quarter of ``blackbox status``'s start-up) and decodes the usual answers, and each
line of ``tail``, in microseconds. A caller expecting megabytes (``status --json`` at 20,000 tags)
passes ``decode=orjson.loads``.
"""

from __future__ import annotations

import getpass
import json
import socket

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (as mypy reads it)
if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterator
    from typing import Any

    Decode = Callable[[bytes], Any]
    SocketPath = str | os.PathLike[str]


SMALL_ANSWER_BYTES = 4096
"""Lines up to this size are decoded with the standard library's JSON, larger ones with orjson."""


class AgentUnreachable(Exception):
    """No agent answers on the control socket."""


class CommandFailed(Exception):
    """The agent refused or failed the command; the message says why."""


def _connect(path: SocketPath, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise AgentUnreachable(f"no agent is running with control socket {path} ({exc.strerror})") from None
    except PermissionError:
        sock.close()
        raise AgentUnreachable(f"not allowed to use the agent's control socket {path}: "
                               "run as the agent's user or a member of its group") from None
    return sock


def _send(sock: socket.socket, cmd: str, args: dict[str, Any], user: str | None) -> None:
    request = {"cmd": cmd, "args": args, "user": user or getpass.getuser()}
    sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")


def _lines(sock: socket.socket, decode: Decode) -> Iterator[dict[str, Any]]:
    with sock.makefile("rb") as f:
        for line in f:
            doc = decode(line)
            if not doc.get("ok"):
                raise CommandFailed(str(doc.get("error")))
            yield doc


def call(path: SocketPath, cmd: str, args: dict[str, Any] | None = None, *, user: str | None = None,
         timeout: float = 10.0, decode: Decode = json.loads) -> Any:
    """Run one command on the agent and return its result."""
    with _connect(path, timeout) as sock:
        _send(sock, cmd, args or {}, user)
        for doc in _lines(sock, decode):
            return doc.get("result")
    raise CommandFailed(f"the agent closed the connection without answering {cmd!r}")


def call_text(path: SocketPath, cmd: str, args: dict[str, Any] | None = None, *, user: str | None = None,
              timeout: float = 10.0) -> bytes:
    """Run a command whose result the agent sends as the text to print (a ``text_bytes`` answer, see
    :mod:`blackbox.agent.control`) and return those bytes as they came.

    An agent started before this command was installed answers with a JSON ``result`` instead: that
    is returned as the same text (indented JSON, a newline at the end).
    """
    with _connect(path, timeout) as sock:
        _send(sock, cmd, args or {}, user)
        with sock.makefile("rb") as f:
            line = f.readline()
            if not line:
                raise CommandFailed(f"the agent closed the connection without answering {cmd!r}")
            doc = _header(line)
            if not doc.get("ok"):
                raise CommandFailed(str(doc.get("error")))
            size = doc.get("text_bytes")
            if not isinstance(size, int):  # an older agent's JSON result
                import orjson

                return orjson.dumps(doc.get("result"), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
            data = f.read(size)
    if len(data) != size:
        raise CommandFailed(f"the agent closed the connection after {len(data):,} of the {size:,} bytes "
                            f"of its answer to {cmd!r}")
    return data


def _header(line: bytes) -> dict[str, Any]:
    """The first line of an answer: a ``text_bytes`` header or an error, a few dozen bytes; or a whole
    JSON result (an older agent's), decoded with orjson when that is large."""
    if len(line) <= SMALL_ANSWER_BYTES:
        return dict(json.loads(line))
    import orjson

    return dict(orjson.loads(line))


def stream(path: SocketPath, cmd: str, args: dict[str, Any] | None = None, *, user: str | None = None,
           timeout: float | None = None, decode: Decode = json.loads) -> Iterator[Any]:
    """Run a streaming command; yield its items until the agent stops or the caller breaks."""
    with _connect(path, 10.0) as sock:
        sock.settimeout(timeout)
        _send(sock, cmd, args or {}, user)
        for doc in _lines(sock, decode):
            yield doc.get("item")
