"""Equal values inside a loaded configuration shared as one object, so that 10,000 tags cost less memory.

A validated pydantic model keeps its own ``__pydantic_fields_set__`` (the names the file gave): a
set of five names is a 728-byte object, made once per tag, and every tag's ``type``, ``order`` or
``unit`` text is its own string. At 10,000 tags that was about 9 MiB of the agent's memory holding
a few dozen distinct values. :func:`share_equal_values` makes every frozen model of a configuration
point at one set per distinct set of names and one string per distinct text.

Sharing is safe only where nothing mutates: the frozen models refuse assignment (the only path on
which pydantic adds to a model's fields set), and ``model_copy`` copies the set before updating it.
A model that is not frozen is left as it is. The values are equal, so nothing a caller can read
changes; ``is`` between two tags' fields is the only difference.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def share_equal_values(root: BaseModel) -> None:
    """Share equal fields sets and equal ``str`` field values among the frozen models under ``root``."""
    sets: dict[frozenset[str], set[str]] = {}
    texts: dict[str, str] = {}
    pending: list[Any] = [root]
    while pending:
        value = pending.pop()
        if isinstance(value, BaseModel):
            fields = value.__dict__
            if value.model_config.get("frozen"):
                names = value.__pydantic_fields_set__
                object.__setattr__(value, "__pydantic_fields_set__", sets.setdefault(frozenset(names), names))
                for name, field in list(fields.items()):
                    if type(field) is str:  # exactly str: a str enum member is already one object
                        fields[name] = texts.setdefault(field, field)
            pending.extend(fields.values())
            if value.__pydantic_extra__:
                pending.extend(value.__pydantic_extra__.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
