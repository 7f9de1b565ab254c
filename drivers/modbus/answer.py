"""What a Modbus link gives back for one read, whatever the link (TCP or a serial line)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from drivers.modbus.planner import ReadRequest


class Answer(NamedTuple):
    """A device's answer to one read: its values (registers, or bits as 0/1), or its exception code."""

    values: Sequence[int]
    exception_code: int | None
    """``None`` for a normal answer; else the Modbus exception code (``values`` is then empty)."""


ILLEGAL_ADDRESS = 2
"""The exception code of a read that reaches beyond what the device has (the planner splits such a request)."""
EXCEPTION_NAMES = {1: "ILLEGAL_FUNCTION", 2: "ILLEGAL_ADDRESS", 3: "ILLEGAL_VALUE", 4: "DEVICE_FAILURE",
                   5: "ACKNOWLEDGE", 6: "DEVICE_BUSY", 7: "NEGATIVE_ACKNOWLEDGE", 8: "MEMORY_PARITY_ERROR",
                   10: "GATEWAY_PATH_UNAVAILABLE", 11: "GATEWAY_NO_RESPONSE"}
"""The Modbus exception codes (Modbus Application Protocol v1.1b3, section 7)."""


def exception_text(code: int) -> str:
    """``"ILLEGAL_ADDRESS (2)"`` for a Modbus exception code."""
    name = EXCEPTION_NAMES.get(code)
    return f"{name} ({code})" if name else f"exception code {code}"


class LinkError(Exception):
    """The link broke the protocol or failed below it: the driver closes it and reconnects."""


def naming(request: ReadRequest, exc: Exception) -> Exception:
    """``exc`` again, of its type, its message led by the request it concerns (``unit 1 hr:0-9: …``)."""
    return type(exc)(f"{request.describe()}: {exc}")
