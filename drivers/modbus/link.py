"""The physical link of a Modbus source: a TCP connection or a serial line.

Modbus TCP runs on the driver's own asyncio protocol (:mod:`drivers.modbus.tcp`, for its CPU
cost); a serial line on pymodbus' serial client (:mod:`drivers.modbus.serial`). Both take the
source's timeout per request, never retry and never reconnect on their own: the agent owns
reconnecting, with back-off, after :class:`~drivers.base.SourceUnavailable`.

A serial line is one bus: all its devices belong in one source (a unit id per tag), whose
requests go out one at a time. Two sources opening the same serial port would interleave their
frames on the wire, so a port is claimed by the first source that connects and refused to others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from drivers.modbus.answer import Answer
from drivers.modbus.config import ModbusSourceConfig
from drivers.modbus.planner import ReadRequest

_serial_owners: dict[str, str] = {}
"""Serial port -> the source that has it open."""


class Link(Protocol):
    """One connection to a device, a gateway or a serial bus, carrying one request at a time."""

    @property
    def connected(self) -> bool: ...

    @property
    def dropped(self) -> int:
        """Answers the link dropped because no request waited for them (a device answering twice)."""

    async def connect(self) -> None:
        """Open the link; ``OSError``, ``TimeoutError`` or :class:`~drivers.modbus.answer.LinkError` if it cannot be."""

    def read(self, requests: Sequence[ReadRequest]) -> asyncio.Future[list[Answer]]:
        """Send the reads one at a time, in order (the first under way when this returns, or at the
        loop's next turn); their answers when awaited.

        The future raises ``TimeoutError`` after the source's timeout for one request, ``OSError``
        when the link is lost, :class:`~drivers.modbus.answer.LinkError` when the device breaks the
        protocol; the message names the request.
        """

    def close(self) -> None: ...


class SerialPortBusy(Exception):
    """Another source of this agent has the serial port open."""


def endpoint(cfg: ModbusSourceConfig) -> str:
    """How logs and diagnostics name the link: ``10.0.0.5:502`` or ``/dev/ttyUSB0 19200 8E1``."""
    if cfg.transport == "tcp":
        return f"{cfg.host}:{cfg.port}"
    return f"{cfg.serial_port} {cfg.baudrate} {cfg.bytesize}{cfg.parity}{cfg.stopbits}"


def make_link(cfg: ModbusSourceConfig) -> Link:
    """An unconnected link for the source (pymodbus is imported only for a serial line)."""
    if cfg.transport == "tcp":
        from drivers.modbus.tcp import TcpLink

        if cfg.host is None:
            raise RuntimeError("internal error: expected cfg.host is not None (the config model requires it for tcp)")
        return TcpLink(cfg.host, cfg.port, cfg.timeout)
    from drivers.modbus.serial import SerialLink

    return SerialLink(cfg)


def claim_serial_port(cfg: ModbusSourceConfig) -> None:
    """Reserve the source's serial port (no-op for tcp); :class:`SerialPortBusy` if another source has it."""
    if cfg.serial_port is None:
        return
    owner = _serial_owners.setdefault(cfg.serial_port, cfg.name)
    if owner != cfg.name:
        raise SerialPortBusy(f"serial port {cfg.serial_port} is already used by source {owner!r}: "
                             "put all devices of one bus in one source, with a unit_id per tag")


def release_serial_port(cfg: ModbusSourceConfig) -> None:
    if cfg.serial_port is not None and _serial_owners.get(cfg.serial_port) == cfg.name:
        del _serial_owners[cfg.serial_port]
