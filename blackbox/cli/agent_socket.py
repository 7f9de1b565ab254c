"""The running agent's control socket, read from a configuration file without validating all of it.

The commands that talk to the agent (``status``, ``tail``, ``alarms``, ``batch``…) need one
setting, ``agent.control_socket``. Validating a whole configuration of 20,000 tags takes seconds
(and loads pydantic and every driver), so these commands read the ``agent:`` section alone: the
file's top-level keys are found by their lines, and only that section is read — a plain
``control_socket: path`` line directly, anything else with a YAML parser. The agent validated
the whole file when it started; the command only needs to know where to ask.

Whatever this quick reading cannot be sure of — an unreadable file, a document that is not a
block mapping at its top level, no ``gateway:`` or ``site:`` section, an ``agent:`` section that
does not parse or holds something other than a path — is left to the full validation, which
reports the problem with its file and line as every other command does.
"""

from __future__ import annotations

import os
import re

DEFAULT_SOCKET = "var/agent.sock"
"""``agent.control_socket``'s default (:class:`blackbox.config.agent.AgentConfig`; a test checks they agree)."""
_TOP_KEY = re.compile(rb"^([A-Za-z_][A-Za-z0-9_]*)[ \t]*:(?:[ \t]|$)")
_TOP_LINE = re.compile(rb"\n((?:[^ \t#\r\n-]|-(?![ \t\r\n]|$))[^\r\n]*)", re.MULTILINE)
"""A line at column 0 that is neither indented, a comment, blank, nor an item of a list written at
its key's indentation (``- name: …``, as PyYAML writes lists): a top-level key, or something we
cannot read quickly. Found at C speed: a 20,000-tag file has 100,000 lines. It is matched after the
newline that ends the line before, in the file with a newline put in front: a pattern that begins
with a character is found by a fast scan, one that begins with ``^`` is tried at every byte (8 ms
instead of 1.3 for a 20,000-tag file, the largest part of ``blackbox status``'s own work)."""
_REQUIRED = {b"gateway", b"site"}
_PLAIN_SOCKET = re.compile(rb"^agent:[ \t]*\r?\n(?:(?:[ \t]+[^\r\n]*)?\r?\n)*?[ \t]+control_socket:[ \t]*"
                           rb"([A-Za-z0-9_./@+-]+)[ \t]*(?:#[^\r\n]*)?\r?$", re.MULTILINE)
"""``agent:`` as a block with ``control_socket: a/plain/path`` in it: the usual case, read without
loading a YAML parser (a sizeable part of the command's start-up)."""


def quick_control_socket(path: str | os.PathLike[str]) -> str | None:
    """The control socket named by the configuration at ``path`` (an absolute path), or ``None`` if unsure.

    Paths are strings here: ``pathlib`` is among the slower imports of ``blackbox status``.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    section = _agent_section(raw)
    if section is None:
        return None
    value: object = DEFAULT_SOCKET if section == b"" else _plain_socket(section)
    if value is None:
        value = _yaml_socket(section)
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    return value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(path)), value)


def _plain_socket(section: bytes) -> str | None:
    if section.count(b"control_socket") != 1:
        return None
    match = _PLAIN_SOCKET.match(section)
    return None if match is None else match.group(1).decode()


def _yaml_socket(section: bytes) -> object:
    """``agent.control_socket`` of the section as YAML reads it (the default if absent), ``None`` if unusable."""
    import yaml

    try:
        doc = yaml.load(section, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # a safe loader
    except yaml.YAMLError:
        return None
    agent = doc.get("agent") if isinstance(doc, dict) else None
    if agent is None:
        agent = {}
    if not isinstance(agent, dict):
        return None
    return agent.get("control_socket", DEFAULT_SOCKET)


def _agent_section(raw: bytes) -> bytes | None:
    """The lines of the top-level ``agent:`` section (``b""`` if there is none), ``None`` if unsure."""
    keys: list[tuple[bytes, int]] = []  # (key, offset of its line)
    for line in _TOP_LINE.finditer(b"\n" + raw):  # line.start(), at the newline put before it, is its offset in raw
        match = _TOP_KEY.match(line.group(1))
        if match is None:  # flow style, a document marker, an anchor, a complex key: not a plain block mapping
            return None
        keys.append((match.group(1), line.start()))
    names = [k for k, _ in keys]
    if not set(names) >= _REQUIRED or len(names) != len(set(names)):
        return None
    for i, (key, start) in enumerate(keys):
        if key == b"agent":
            end = keys[i + 1][1] if i + 1 < len(keys) else len(raw)
            return raw[start:end]
    return b""
