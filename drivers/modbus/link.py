"""The physical link of a Modbus source: a TCP connection or a serial line, as a pymodbus client.

pymodbus' own timeout of 3 s with 3 retries could stall a source for ~12 s, so every client gets
the source's timeout, no retries and no automatic reconnect: the agent owns reconnecting, with
back-off, after :class:`~drivers.base.SourceUnavailable`.

A serial line is one bus: all its devices belong in one source (a unit id per tag), whose
requests go out one at a time. Two sources opening the same serial port would interleave their
frames on the wire, so a port is claimed by the first source that connects and refused to others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers.modbus.config import ModbusSourceConfig
from drivers.modbus.pdu import FAST_RESPONSES

ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient

_serial_owners: dict[str, str] = {}
"""Serial port -> the source that has it open."""


class SerialPortBusy(Exception):
    """Another source of this agent has the serial port open."""


def endpoint(cfg: ModbusSourceConfig) -> str:
    """How logs and diagnostics name the link: ``10.0.0.5:502`` or ``/dev/ttyUSB0 19200 8E1``."""
    if cfg.transport == "tcp":
        return f"{cfg.host}:{cfg.port}"
    return f"{cfg.serial_port} {cfg.baudrate} {cfg.bytesize}{cfg.parity}{cfg.stopbits}"


class _Common(TypedDict):
    """The client arguments of both transports."""

    name: str
    timeout: float
    retries: int
    reconnect_delay: float
    trace_connect: Callable[[bool], None]


def make_client(cfg: ModbusSourceConfig, on_connection_change: Callable[[bool], None]) -> ModbusClient:
    """An unconnected client for the source's link, decoding register responses in one step."""
    common = _Common(name=f"blackbox:{cfg.name}", timeout=cfg.timeout, retries=0, reconnect_delay=0,
                     trace_connect=on_connection_change)
    client: ModbusClient
    if cfg.transport == "tcp":
        if cfg.host is None:
            raise RuntimeError("internal error: expected cfg.host is not None (the config model requires it for tcp)")
        client = AsyncModbusTcpClient(cfg.host, port=cfg.port, **common)
    else:
        if cfg.serial_port is None:
            raise RuntimeError("internal error: no serial_port (the config model requires it for rtu)")
        client = AsyncModbusSerialClient(cfg.serial_port, framer=FramerType.RTU, baudrate=cfg.baudrate,
                                         bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits,
                                         **common)
    for response in FAST_RESPONSES:
        client.register(response)
    return client


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
