"""Reading a configuration file: parse, validate every section and source, report every issue with
its file, path and line, and resolve relative paths against the file's folder."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from blackbox.config.compact import share_equal_values
from blackbox.config.document import Config, StoreFile
from blackbox.config.rules import LIMIT_RULES, RESERVED_ALARM_IDS, RULE_ADAPTER
from blackbox.config.sources import SourceConfig
from blackbox.config.store import StoreConfig

if TYPE_CHECKING:  # PyYAML is imported only to parse: the running agent gets its models from a forked child
    from blackbox.config.yamldoc import Lines


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file."""

    file: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path
    sha256: str
    """Hash of the file's exact bytes: recorded in every sealed batch and in ``config.applied``."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", None, f"cannot read file: {exc.strerror or exc}")]) from exc


def load_config(path: str | Path) -> LoadedConfig:
    """Read, parse and validate a configuration file; raise :class:`ConfigError` listing every issue.

    Relative paths in the file (key, buffer, socket, certificates, a SQLite store) are resolved
    against the file's folder, not the current directory: a command run from anywhere finds the same
    files the service does.
    """
    path = Path(path)
    raw_bytes = _read(path)
    config = parse_config(raw_bytes.decode("utf-8", errors="replace"), str(path))
    config = resolve_paths(config, Path(os.path.abspath(path)).parent)
    share_equal_values(config)
    return LoadedConfig(config=config, path=path, sha256=hashlib.sha256(raw_bytes).hexdigest())


EXIT_CONFIG_ERROR = 3
"""The forked loader's exit status for a :class:`ConfigError` (the parent loads again to report it)."""


def load_config_forked(path: str | Path) -> LoadedConfig:
    """:func:`load_config` in a forked child process; the parent unpickles the result.

    Parsing a large file leaves most of its peak in the process for good: PyYAML's node graph and the
    raw document are freed after the models are built among them, and Python's allocator keeps the
    arenas they shared with the models (at 10,000 tags the agent grew by 70 MiB for 15 MiB of live
    models). Unpickled in a process that never parsed, only the models are allocated: +20 MiB.

    Used where the process is still single-threaded (forking a threaded process may copy a lock
    that another thread holds); elsewhere, and where ``fork`` does not exist, it is
    :func:`load_config`. A configuration that does not load is loaded again here, so that its
    :class:`ConfigError` (or any other failure) is raised in this process as :func:`load_config`
    raises it.
    """
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return load_config(path)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(path, read_fd, write_fd)  # never returns
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        blob = pipe.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        if code != EXIT_CONFIG_ERROR:
            logging.getLogger(__name__).warning("loading the configuration in a child process failed "
                                                "(exit status %d): loading it here", code)
        return load_config(path)
    loaded = pickle.loads(blob)  # written by our own child from the file it just read
    if not isinstance(loaded, LoadedConfig):
        raise RuntimeError(f"internal error: the configuration's child process sent a {type(loaded).__name__}")
    return loaded


def _child(path: str | Path, read_fd: int, write_fd: int) -> None:
    """The forked child of :func:`load_config_forked`: load, pickle into the pipe, exit (``os._exit``:
    none of the parent's exit handlers or buffered output run twice)."""
    code = 1
    try:
        os.close(read_fd)
        blob = pickle.dumps(load_config(path), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(blob)
        code = 0
    except ConfigError:
        code = EXIT_CONFIG_ERROR
    except BaseException:  # reported by the parent's own attempt; the traceback here says where
        traceback.print_exc()
    finally:
        os._exit(code)


def is_store_only(data: Any) -> bool:
    """Whether a parsed document is a store-side file (only a ``store:`` section)."""
    return isinstance(data, dict) and set(data) <= {"store"}


def load_store_config(path: str | Path) -> StoreConfig:
    """The ``store:`` section of a store-side file (``store:`` only) or of a full gateway file."""
    import yaml

    from blackbox.config.yamldoc import YamlShapeError, compose_and_load, line_index, nearest_line

    path = Path(path)
    text = _read(path).decode("utf-8", errors="replace")
    try:
        node, data = compose_and_load(text)
    except (yaml.YAMLError, YamlShapeError, RecursionError):
        node, data = None, None  # parse_config reports it with its line
    if not is_store_only(data):
        return load_config(path).config.store
    try:
        store = StoreFile.model_validate(data or {}).store
    except ValidationError as exc:
        lines = line_index(node) if node is not None else {}
        raise ConfigError([ConfigIssue(str(path), _dotted(tuple(e["loc"])), nearest_line(lines, tuple(e["loc"])),
                                       e["msg"]) for e in exc.errors(include_url=False)]) from None
    return resolve_paths(store, Path(os.path.abspath(path)).parent)


M = TypeVar("M", bound=BaseModel)


def resolve_paths(model: M, base: Path) -> M:
    """A copy of ``model`` whose relative ``Path`` fields (at any depth) and relative SQLite URL are
    absolute under ``base``."""
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolved(value, base)
        if new is not value:
            update[name] = new
    if isinstance(model, StoreConfig) and (url := _sqlite_file_url(model.database_url, base)):
        update["database_url"] = url
    return model.model_copy(update=update) if update else model


def _resolved(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_paths(value, base)
    if isinstance(value, list):
        items = [_resolved(v, base) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _sqlite_file_url(url: str, base: Path) -> str | None:
    """``sqlite:///rel/file`` made absolute under ``base``; None if not a relative SQLite file URL."""
    prefix, _, rest = url.partition(":///")
    if not prefix.startswith("sqlite") or not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return None
    return f"{prefix}:///{base / rest}"


def parse_config(text: str, name: str = "<string>") -> Config:
    """Validate YAML text; raise :class:`ConfigError` listing every issue with its line."""
    import yaml

    from blackbox.config.yamldoc import Lines, YamlShapeError, load

    try:
        data = load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise ConfigError([ConfigIssue(name, "", line, f"not valid YAML: {context + ': ' if context else ''}"
                                       f"{problem}{column}")]) from exc
    except YamlShapeError as exc:
        raise ConfigError([ConfigIssue(name, "", None, f"not a usable YAML document: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(name, "", None, "not a usable YAML document: nested too deeply")]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(name, "", 1, "the file must be a YAML mapping")])

    lines = Lines(text)
    issues: list[ConfigIssue] = []

    def collect(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> None:
        for err in exc.errors(include_url=False):
            loc = prefix + tuple(err["loc"])
            issues.append(ConfigIssue(name, _dotted(loc), lines.nearest(loc), err["msg"]))

    # Sources are validated one by one against their driver's model (which knows the protocol's
    # fields); the rest of the document against the core models.
    sources_raw = data.get("sources") or []
    config: Config | None = None
    try:
        config = Config.model_validate({**data, "sources": []} if isinstance(sources_raw, list) else data)
    except ValidationError as exc:
        collect(exc)

    from drivers import registry  # late import: drivers depend on this module

    specific: list[SourceConfig] = []
    for i, raw in enumerate(sources_raw if isinstance(sources_raw, list) else []):
        protocol = raw.get("protocol") if isinstance(raw, dict) else None
        model: type[SourceConfig] = SourceConfig
        if isinstance(protocol, str):
            try:
                model = registry.config_model(protocol)
            except KeyError:
                loc = ("sources", i, "protocol")
                issues.append(ConfigIssue(name, _dotted(loc), lines.nearest(loc),
                                          f"unknown protocol {protocol!r} (known: {', '.join(registry.names())})"))
        try:
            specific.append(model.model_validate(raw))
        except ValidationError as exc:
            collect(exc, ("sources", i))

    issues.extend(_cross_check(data, name, lines))
    issues.extend(ConfigIssue(name, _dotted(loc), lines.nearest(loc),
                              "text holds a NUL character (\\0), which a sealed batch cannot carry")
                  for loc in _nul_texts(data))
    if issues:
        raise ConfigError(sorted(issues, key=lambda x: x.line or 0))
    if config is None:
        raise RuntimeError("internal error: expected config is not None")
    return config.model_copy(update={"sources": specific})


def _cross_check(data: dict[str, Any], name: str, lines: Lines) -> list[ConfigIssue]:
    """Checks that span sections: unique names, references to tags that exist.

    They run on the raw document, so that they are reported even when other sections are invalid.
    """
    issues: list[ConfigIssue] = []

    def add(loc: tuple[Any, ...], msg: str) -> None:
        issues.append(ConfigIssue(name, _dotted(loc), lines.nearest(loc), msg))

    def items(value: Any) -> list[tuple[int, dict[str, Any]]]:
        return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] if isinstance(value, list) else []

    seen_sources: set[str] = set()
    tags: dict[str, dict[str, Any]] = {}
    for i, src in items(data.get("sources")):
        src_name = str(src.get("name"))
        if src_name in seen_sources:
            add(("sources", i, "name"), f"duplicate source name {src_name!r}")
        seen_sources.add(src_name)
        for j, tag in items(src.get("tags")):
            tag_name = tag.get("name")
            if isinstance(tag_name, str):
                if tag_name in tags:
                    add(("sources", i, "tags", j, "name"), f"duplicate tag name {tag_name!r}")
                tags[tag_name] = tag

    def ref(loc: tuple[Any, ...], tag: Any) -> None:
        if isinstance(tag, str) and tag not in tags:
            add(loc, f"no tag named {tag!r} is configured")

    ctx = data.get("context") if isinstance(data.get("context"), dict) else {}
    if not isinstance(ctx, dict):
        raise RuntimeError("internal error: expected isinstance(ctx, dict)")
    for fld in ("batch_tag", "product_tag", "recipe_tag", "recipe_version_tag", "phase_tag"):
        ref(("context", fld), ctx.get(fld))
    for i, m in items(ctx.get("materials")):
        for fld in ("trigger", "material", "lot", "target", "actual", "scale", "operator", "tolerance"):
            ref(("context", "materials", i, fld), m.get(fld))
    for i, q in items(ctx.get("qc")):
        ref(("context", "qc", i, "trigger"), q.get("trigger"))
        ref(("context", "qc", i, "sample"), q.get("sample"))
        if isinstance(q.get("tests"), dict):
            for test, tag in q["tests"].items():
                ref(("context", "qc", i, "tests", test), tag)
    alarm_ids: set[str] = set()
    for i, rule in items(data.get("rules")):
        tag_name = rule.get("tag")
        ref(("rules", i, "tag"), tag_name)
        kind = rule.get("type", "threshold")
        if kind in LIMIT_RULES and isinstance(tag_name, str) and tag_name in tags and not tags[tag_name].get("limits"):
            add(("rules", i, "tag"), f"tag {tag_name!r} has no limits for a {kind} rule to check")
        for fld in ("when", "suppress_when"):
            if isinstance(rule.get(fld), dict):
                ref(("rules", i, fld, "tag"), rule[fld].get("tag"))
        ref(("rules", i, "sample_on"), rule.get("sample_on"))
        if kind == "disconnected" and isinstance(rule.get("source"), str) and rule["source"] not in seen_sources:
            add(("rules", i, "source"), f"no source named {rule['source']!r} is configured")
        try:
            alarm_id = RULE_ADAPTER.validate_python(rule).alarm_id()
        except ValidationError:
            continue  # reported by the model validation
        if alarm_id in alarm_ids:
            add(("rules", i), f"two rules raise the alarm {alarm_id!r}: give one of them another id")
        if alarm_id in RESERVED_ALARM_IDS:
            add(("rules", i), f"the alarm id {alarm_id!r} is the agent's own (the buffer lost data): "
                              "give the rule another id")
        alarm_ids.add(alarm_id)
    return issues


def _nul_texts(data: Any) -> list[tuple[Any, ...]]:
    """Where the document holds a text (key or value) with a NUL character: the configuration is
    recorded in the chain (``config.applied``), and the batch format forbids NUL."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    seen: set[int] = set()  # YAML aliases share (even nest) nodes: visit each container once
    while stack:
        node, loc = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and "\x00" in key:
                    found.append(loc)
                stack.append((value, (*loc, key)))
        elif isinstance(node, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node))
        elif isinstance(node, str) and "\x00" in node:
            found.append(loc)
    return found


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)
