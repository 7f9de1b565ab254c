"""Checking the arguments of an operator entry on the control socket."""

from __future__ import annotations

import math
from typing import Any

from blackbox.agent.control import ControlError


class Args:
    """Checks a command's arguments; every mistake is a :class:`ControlError` naming the field."""

    def __init__(self, args: dict[str, Any], known: set[str]) -> None:
        unknown = sorted(set(args) - known)
        if unknown:
            raise ControlError(f"unknown argument(s) {', '.join(unknown)} (known: {', '.join(sorted(known)) or '-'})")
        self._args = args

    def text(self, key: str, required: bool = True) -> Any:
        value = self._args.get(key)
        if value is None:
            if required:
                raise ControlError(f"{key} is required")
            return None
        if not isinstance(value, str) or not value.strip() or not value.isprintable() or len(value) > 200:
            raise ControlError(f"{key} must be a non-empty printable text of at most 200 characters")
        return value.strip()

    def number(self, key: str, required: bool = True) -> Any:
        value = self._args.get(key)
        if value is None:
            if required:
                raise ControlError(f"{key} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ControlError(f"{key} must be a finite number, not {value!r}")
        return float(value)

    def flag(self, key: str) -> bool | None:
        value = self._args.get(key)
        if value is not None and not isinstance(value, bool):
            raise ControlError(f"{key} must be true or false")
        return value
