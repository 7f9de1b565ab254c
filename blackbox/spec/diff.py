"""What changed between two specifications: one line per parameter, with its old and new value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from blackbox.config.rules import RULE_ADAPTER

LIMIT_KEYS = ("ll", "l", "h", "hh")
HEADER_KEYS = ("id", "product", "version", "reason", "supersedes")


@dataclass(frozen=True)
class Change:
    path: str
    """e.g. ``parameters.EM-01.temperature[emulsify].hh`` or ``rules.threshold:EM-01.vacuum.deadband``."""
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"


def _show(v: Any) -> str:
    return "(none)" if v is None else str(v)


def _selector(ls: dict[str, Any]) -> str:
    parts = []
    if ls.get("phases"):
        parts.append(",".join(str(p) for p in ls["phases"]))
    if ls.get("products"):
        parts.append("products " + ",".join(str(p) for p in ls["products"]))
    return f"[{'; '.join(parts) or 'all'}]"


def _alarm_id(rule: dict[str, Any]) -> str:
    try:
        return RULE_ADAPTER.validate_python(rule).alarm_id()
    except ValidationError:
        return str(rule.get("id") or f"{rule.get('type', 'threshold')}:{rule.get('tag') or rule.get('source')}")


def flatten(doc: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter of a specification document (raw mapping) under a stable, readable path."""
    if not doc:
        return {}
    out: dict[str, Any] = {k: doc.get(k) for k in HEADER_KEYS if doc.get(k) is not None}
    for tag, sets in sorted((doc.get("parameters") or {}).items()):
        for ls in sets or []:
            if isinstance(ls, dict):
                for k in LIMIT_KEYS:
                    if ls.get(k) is not None:
                        out[f"parameters.{tag}{_selector(ls)}.{k}"] = ls[k]
    for rule in doc.get("rules") or []:
        if isinstance(rule, dict):
            rid = _alarm_id(rule)
            for k, v in sorted(rule.items()):
                if k not in ("id",):
                    out[f"rules.{rid}.{k}"] = v
    for mat, m in sorted((doc.get("materials") or {}).items()):
        for k, v in sorted((m or {}).items()):
            out[f"materials.{mat}.{k}"] = v
    for q in doc.get("qc") or []:
        if isinstance(q, dict):
            for k, v in sorted(q.items()):
                if k != "test":
                    out[f"qc.{q.get('test')}.{k}"] = v
            out.setdefault(f"qc.{q.get('test')}.required", True)
    for k, v in sorted((doc.get("retention") or {}).items()):
        out[f"retention.{k}"] = v
    return out


def diff(old: dict[str, Any] | None, new: dict[str, Any] | None, *, header: bool = False) -> list[Change]:
    """The parameters that differ (added: old None; removed: new None), in path order.

    ``header`` also lists id, version, reason… (off by default: they change with every version).
    """
    a, b = flatten(old), flatten(new)
    changes = []
    for path in sorted(set(a) | set(b)):
        if not header and path in HEADER_KEYS:
            continue
        if a.get(path) != b.get(path):
            changes.append(Change(path, a.get(path), b.get(path)))
    return changes
