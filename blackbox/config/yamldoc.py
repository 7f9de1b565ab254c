"""YAML documents parsed once and safely: the shape is checked before any data is built, and every
path gets the line it starts on (for error messages)."""

from __future__ import annotations

from typing import Any

import yaml

_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""LibYAML's loader when PyYAML has it (ten times faster), else the pure-Python one: same results."""


def compose_and_load(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node graph (for line numbers) and its data, parsed once.

    Raises :class:`YamlShapeError` before building any data from a document that contains itself
    or expands to too many nodes.
    """
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        check_shape(node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def load(text: str) -> Any:
    """The document's data, parsed as :func:`compose_and_load` parses it, without keeping the node graph.

    The graph (a node and two marks per scalar) is garbage once the data is built; dropped before
    the data is validated, its memory is reused by the validated models instead of growing the
    process for good (9 MiB of the agent's resident memory with 10,000 tags). Lines for error
    messages come from :class:`Lines`, which parses again only if asked.
    """
    return compose_and_load(text)[1]


class Lines:
    """The line of every path in a document (see :func:`line_index`), indexed when first asked."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._index: dict[tuple[Any, ...], int] | None = None

    def nearest(self, loc: tuple[Any, ...]) -> int | None:
        """:func:`nearest_line` of ``loc`` (the document parsed once already: it parses again the same)."""
        if self._index is None:
            node = compose_and_load(self._text)[0]
            self._index = line_index(node) if node is not None else {}
        return nearest_line(self._index, loc)


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.MappingNode):
        return [c for pair in n.value for c in pair]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def check_shape(root: yaml.Node) -> None:
    """Refuse a node graph with a cycle (a recursive alias) or more than :data:`MAX_YAML_NODES` nodes
    once aliases are expanded; linear in the number of distinct nodes (aliases share them)."""
    size: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        n, leaving = stack.pop()
        key = id(n)
        if leaving:
            size[key] = 1 + sum(size[id(c)] for c in _children(n))
            if size[key] > MAX_YAML_NODES:
                raise YamlShapeError(f"the document expands to more than {MAX_YAML_NODES:,} nodes (aliases?)")
            continue
        if key in size:
            continue
        if key in entered:  # entered, not left: we are inside it, so it contains itself
            raise YamlShapeError(f"a value at line {n.start_mark.line + 1} contains itself (a recursive alias)")
        entered.add(key)
        stack.append((n, True))
        stack.extend((c, False) for c in _children(n) if id(c) not in size)


MAX_YAML_NODES = 1_000_000
"""Nodes a configuration may expand to (aliases included): a few aliases can otherwise expand to
billions of nodes ("billion laughs"); a real configuration has thousands."""


class YamlShapeError(ValueError):
    """The YAML document nests itself through an alias, or expands to too many nodes."""


def line_index(node: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map every path in the YAML document to the 1-based line where its value starts.

    The node graph has passed :func:`check_shape`: no cycle, a bounded expansion. Iterative, so
    that a deep document cannot exhaust Python's stack.
    """
    index: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())]
    while stack:
        n, path = stack.pop()
        index.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                k = key.value
                index[(*path, k)] = key.start_mark.line + 1  # the key's line, not its value's
                stack.append((value, (*path, k)))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(n.value))
    return index


def nearest_line(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """Line of ``loc``, or of its closest existing parent (a missing field points at its owner)."""
    # pydantic puts the discriminator or union member name into loc; drop non-document parts
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
