"""``blackbox diag``: commissioning and diagnosis of the sources, for plant engineers.

Every command prints a readable table, or one JSON document with ``--json``, and exits non-zero
when what it checks failed: 1 for an unreachable source, a refused request or a bad value; 2 for
an unusable configuration file or argument.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import orjson
import typer

from blackbox.cli.common import load_or_exit
from blackbox.cli.tables import echo_table
from blackbox.model import Quality

if TYPE_CHECKING:
    from asyncua import ua  # imported where used: the other commands start without it

app = typer.Typer(help="Diagnose sources: reachability, what a register or node holds, the request plan.\n\n"
                  "Example: blackbox diag sources -c /etc/blackbox/blackbox.yaml", no_args_is_help=True)
opcua_app = typer.Typer(help="Browse and read an OPC UA server.\n\n"
                        "Example: blackbox diag opcua browse opc.tcp://192.168.10.11:4840", no_args_is_help=True)
modbus_app = typer.Typer(help="Read registers of a Modbus TCP device.\n\n"
                         "Example: blackbox diag modbus read 192.168.10.21:502 --unit 1 --address hr:100 "
                         "--count 4 --type float32 --order CDAB", no_args_is_help=True)
app.add_typer(opcua_app, name="opcua")
app.add_typer(modbus_app, name="modbus")

JsonOption = typer.Option(False, "--json", help="Print one JSON document instead of a table.")
EXIT_FAILED = 1
EXIT_USAGE = 2


_Table = tuple[list[str], list[list[str]]]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> _Table:
    """The header and the rows as text (``-`` for a missing value), for :func:`_emit`."""
    return [str(h) for h in headers], [["-" if c is None else str(c) for c in row] for row in rows]


def _emit(document: Any, table: _Table, json_out: bool) -> None:
    """One JSON document, or the table (drawn on a terminal, plain aligned text when piped)."""
    if json_out:
        typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        echo_table(*table)


class DiagFailure(typer.Exit):
    """A diagnosis that could not be made; its message is printed once, as text or JSON."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    return DiagFailure(message, code)


P = ParamSpec("P")


def _reported(command: Callable[P, None]) -> Callable[P, None]:
    """Print a failure as ``error: …`` on stderr and, with ``--json``, as ``{"error": …}`` on stdout too, so
    that a script reading the JSON always gets a document."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        from blackbox.cli.errors import describe

        try:
            command(*args, **kwargs)
        except DiagFailure as exc:
            message, code = exc.message, exc.exit_code
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if not kwargs.get("json_out"):
                raise  # the top-level handler reports it
            message, code = describe(exc)
        else:
            return
        typer.echo(f"error: {message}", err=True)
        if kwargs.get("json_out"):
            typer.echo(orjson.dumps({"error": message, "exit_code": code}, option=orjson.OPT_INDENT_2).decode())
        raise typer.Exit(code)

    return run


# --- diag sources -----------------------------------------------------------------------------


@app.command("sources")
@_reported
def sources(config: Path = typer.Option(..., "--config", "-c", help="Configuration file (YAML)."),
            json_out: bool = JsonOption) -> None:
    """Connect to every configured source at once and read each tag once: reachable?, round-trip
    time, tags good/bad, last error. Exit 1 if a source is unreachable or a tag is bad.

    Example: blackbox diag sources -c /etc/blackbox/blackbox.yaml --json
    """
    from drivers import registry

    cfg = load_or_exit(config).config

    async def probe_all() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(_probe(registry.create(s)) for s in cfg.sources)))

    results = asyncio.run(probe_all())
    rows = [(r["source"], r["protocol"], r["endpoint"], "yes" if r["reachable"] else "NO",
             f"{r['round_trip_ms']:.1f}" if r["round_trip_ms"] is not None else None, r["requests"],
             r["good"], r["uncertain"], r["bad"], r["last_error"] or "") for r in results]
    _emit(results, _table(["source", "protocol", "endpoint", "reachable", "rtt ms", "requests", "good",
                           "uncertain", "bad", "last error"], rows), json_out)
    down = [f"{r['source']} ({r['endpoint']}): {r['last_error']}" for r in results if not r["reachable"]]
    bad = [f"{r['source']}: {r['bad']} bad tag(s)" for r in results if r["reachable"] and r["bad"]]
    if down or bad:
        typer.echo(f"error: {'; '.join([*(f'unreachable {d}' for d in down), *bad])}", err=True)
        raise typer.Exit(EXIT_FAILED)


async def _probe(driver: Any) -> dict[str, Any]:
    """Connect, read once, close: what ``diag sources`` shows of one source."""
    from drivers.base import SourceUnavailable

    cfg = driver.config
    began = time.perf_counter()
    samples = []
    try:
        async with asyncio.timeout(5 * cfg.timeout):
            await driver.connect()
        async with asyncio.timeout(cfg.timeout * (driver.health.requests_per_cycle + 1)):
            samples = await driver.read()
    except (SourceUnavailable, TimeoutError, OSError) as exc:
        driver.health.last_error = driver.health.last_error or str(exc) or type(exc).__name__
    finally:
        await driver.close()
    health = driver.health
    bad = [s for s in samples if s.quality is Quality.BAD]
    if bad and not health.last_error:
        health.last_error = f"{bad[0].tag}: {bad[0].reason}"
    return {
        "source": cfg.name, "protocol": cfg.protocol, "endpoint": health.details.get("endpoint"),
        "reachable": bool(samples), "round_trip_ms": health.last_round_trip_s * 1000
        if samples and health.last_round_trip_s is not None else None,
        "requests": health.requests_per_cycle, "tags": len(cfg.tags),
        "good": sum(s.quality is Quality.GOOD for s in samples),
        "uncertain": sum(s.quality is Quality.UNCERTAIN for s in samples), "bad": len(bad),
        "bad_tags": [{"tag": s.tag, "reason": s.reason} for s in bad], "last_error": health.last_error,
        "connect_s": round(time.perf_counter() - began, 3),
        "details": health.details,
    }


# --- diag plan --------------------------------------------------------------------------------


@app.command("plan")
@_reported
def plan(config: Path = typer.Option(..., "--config", "-c", help="Configuration file (YAML)."),
         probe: bool = typer.Option(False, "--probe", help="Connect and read once first: shows the splits learned "
                                    "from refused Modbus blocks and the OPC UA server's MaxNodesPerRead."),
         json_out: bool = JsonOption) -> None:
    """Show the Modbus requests the planner makes per cycle and how each OPC UA source's Read is split.

    Example: blackbox diag plan -c /etc/blackbox/blackbox.yaml --probe
    """
    from drivers import registry
    from drivers.modbus import ModbusDriver
    from drivers.opcua import OpcUaDriver

    cfg = load_or_exit(config).config
    drivers = [registry.create(s) for s in cfg.sources]
    if probe:
        async def probe_all() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(_probe(d) for d in drivers)))

        unreachable = [r["source"] for r in asyncio.run(probe_all()) if not r["reachable"]]
    else:
        unreachable = []
    document: list[dict[str, Any]] = []
    rows: list[tuple[Any, ...]] = []
    for driver in drivers:
        name = driver.config.name
        if isinstance(driver, ModbusDriver):
            requests = [{"unit_id": r.unit_id, "table": r.table, "start": r.start, "count": r.count,
                         "tags": [s.tag.name for s in r.tags]} for r in driver.plan]
            document.append({"source": name, "protocol": "modbus", "requests": requests,
                             "splits": driver.health.details["splits"]})
            for r in driver.plan:
                tags = [s.tag.name for s in r.tags]
                shown = ", ".join(tags[:3]) + (f" … (+{len(tags) - 3})" if len(tags) > 3 else "")
                rows.append((name, r.describe(), r.count, len(tags), shown))
        elif isinstance(driver, OpcUaDriver):
            limit = driver.max_nodes_per_read if probe else None
            nodes = len(driver.config.tags)
            reads = -(-nodes // limit) if limit else 1
            mode = driver.settings.mode
            document.append({"source": name, "protocol": "opcua", "mode": mode, "nodes": nodes,
                             "max_nodes_per_read": limit, "reads_per_cycle": reads if mode == "poll" else 0})
            what = f"{reads} Read(s) per cycle" if mode == "poll" else "subscription"
            note = f"MaxNodesPerRead {limit or 'none'}" if probe else "the server's MaxNodesPerRead may split it"
            rows.append((name, what, None, nodes, note))
        else:
            document.append({"source": name, "protocol": driver.config.protocol})
            rows.append((name, "(no plan to show for this protocol)", None, len(driver.config.tags), ""))
    _emit(document, _table(["source", "request", "size", "tags", "first tags"], rows), json_out)
    if unreachable:
        typer.echo(f"not reachable, plan not probed: {', '.join(unreachable)}", err=True)
        raise typer.Exit(EXIT_FAILED)


# --- diag opcua -------------------------------------------------------------------------------


def _ua_source(url: str, username: str | None, password: str | None, security: str, certificate: Path | None,
               private_key: Path | None, tags: list[dict[str, Any]] | None = None) -> Any:
    from pydantic import ValidationError

    from drivers.opcua import OpcUaSourceConfig

    try:
        return OpcUaSourceConfig.model_validate({
            "name": "diag", "protocol": "opcua", "endpoint": url, "timeout": 5.0, "username": username,
            "password": password, "security": security, "certificate": certificate, "private_key": private_key,
            "tags": tags or []})
    except ValidationError as exc:
        given = {"endpoint": f"URL {url!r}", "security": f"--security {security!r}"}
        raise _fail("; ".join(f"{given.get(str(e['loc'][0]), '.'.join(map(str, e['loc'])))}: {e['msg']}"
                              for e in exc.errors()), EXIT_USAGE) from None


UserOption = typer.Option(None, "--username", help="User name (anonymous without).")
PasswordOption = typer.Option(None, "--password", envvar="BLACKBOX_OPCUA_PASSWORD",
                              help="Password (or BLACKBOX_OPCUA_PASSWORD; never printed).")
SecurityOption = typer.Option("None", "--security", help="None, Sign or SignAndEncrypt (Basic256Sha256).")
CertOption = typer.Option(None, "--certificate", help="Client certificate for the Sign modes.")
KeyOption = typer.Option(None, "--private-key", help="Private key of the client certificate.")


@opcua_app.command("browse")
@_reported
def opcua_browse(url: str = typer.Argument(..., help="Endpoint, e.g. opc.tcp://192.168.10.11:4840."),
                 node: str = typer.Argument("i=85", help="Node to list the children of (default: Objects); "
                                            "nsu=<uri>;s=<name> or ns=<index>;s=<name> or i=<number>."),
                 username: str | None = UserOption, password: str | None = PasswordOption,
                 security: str = SecurityOption, certificate: Path | None = CertOption,
                 private_key: Path | None = KeyOption, json_out: bool = JsonOption) -> None:
    """List the children of NODE: node id (with its namespace URI, as a tag address), name, class, and
    the data type and value of variables.

    Example: blackbox diag opcua browse opc.tcp://127.0.0.1:4840 "nsu=urn:blackbox:sim:cream-line;s=EM-01"
    """
    from drivers.opcua import OpcUaDriver

    driver = OpcUaDriver(_ua_source(url, username, password, security, certificate, private_key))
    try:
        children = asyncio.run(_browse(driver, node))
    except (ValueError, LookupError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    rows = [(c["node_id"], c.get("name"), c.get("class"), c.get("type"), c.get("value"),
             c.get("error") or c.get("status") or "") for c in children]
    _emit(children, _table(["node id", "name", "class", "type", "value", "status"], rows), json_out)
    if any(c.get("error") or c.get("status", "Good").startswith("Bad") for c in children):
        raise typer.Exit(EXIT_FAILED)


async def _browse(driver: Any, node_text: str) -> list[dict[str, Any]]:
    from asyncua import ua
    from asyncua.ua.uaerrors import UaError

    from drivers.opcua.values import status_name

    await _connect(driver)
    try:
        client = driver.session
        namespaces = driver.namespace_array
        parent = client.get_node(_resolve(node_text, namespaces))
        try:
            await parent.read_node_class()  # BadNodeIdUnknown here: browsing it would list nothing
            children = await parent.get_children()
        except UaError as exc:
            raise _fail(f"cannot browse {node_text}: {exc}") from None
        out = []
        for child in children:
            entry: dict[str, Any] = {"node_id": _address(child.nodeid, namespaces)}
            try:
                entry["name"] = (await child.read_browse_name()).Name
                node_class = await child.read_node_class()
                entry["class"] = node_class.name
                if node_class == ua.NodeClass.Variable:
                    dv = await child.read_data_value(raise_on_bad_status=False)
                    variant = dv.Value.VariantType if dv.Value is not None else ua.VariantType.Null
                    if variant == ua.VariantType.Null:  # a bad value carries no type: show the declared one
                        variant = await child.read_data_type_as_variant_type()
                    entry["type"] = variant.name
                    entry["value"] = _jsonable(dv.Value.Value if dv.Value is not None else None)
                    entry["status"] = status_name(dv.StatusCode.value if dv.StatusCode is not None else 0)
            except UaError as exc:
                entry["error"] = str(exc)
            out.append(entry)
        return out
    finally:
        await driver.close()


@opcua_app.command("read")
@_reported
def opcua_read(url: str = typer.Argument(..., help="Endpoint, e.g. opc.tcp://192.168.10.11:4840."),
               nodes: list[str] = typer.Argument(..., help="Node ids as in a tag address: nsu=<uri>;s=<name>, "
                                                 "ns=<index>;s=<name>, i=<number>."),
               username: str | None = UserOption, password: str | None = PasswordOption,
               security: str = SecurityOption, certificate: Path | None = CertOption,
               private_key: Path | None = KeyOption, json_out: bool = JsonOption) -> None:
    """Read the Value of each NODE in one Read: value, data type, StatusCode, source timestamp. Exit 1
    if a node reads bad.

    Example: blackbox diag opcua read opc.tcp://127.0.0.1:4840 "nsu=urn:blackbox:sim:cream-line;s=EM-01.temperature"
    """
    from drivers.opcua import OpcUaDriver

    driver = OpcUaDriver(_ua_source(url, username, password, security, certificate, private_key))
    try:
        values = asyncio.run(_read(driver, nodes))
    except (ValueError, LookupError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    rows = [(v["node"], v["value"], v["type"], v["status"], v["source_timestamp"]) for v in values]
    _emit(values, _table(["node", "value", "type", "status", "source timestamp"], rows), json_out)
    if any(v["status"].startswith("Bad") for v in values):
        raise typer.Exit(EXIT_FAILED)


async def _read(driver: Any, texts: list[str]) -> list[dict[str, Any]]:
    from asyncua import ua
    from asyncua.ua.uaerrors import UaError

    from blackbox.model import iso
    from drivers.opcua.values import status_name, timestamp_us

    await _connect(driver)
    try:
        ids = [_resolve(t, driver.namespace_array) for t in texts]
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.NodesToRead = [ua.ReadValueId(NodeId=i, AttributeId=ua.AttributeIds.Value) for i in ids]
        try:
            results = await driver.session.uaclient.read(params)
        except UaError as exc:
            raise _fail(f"the Read failed: {exc}") from None
        return [{"node": text, "value": _jsonable(dv.Value.Value if dv.Value is not None else None),
                 "type": dv.Value.VariantType.name if dv.Value is not None else None,
                 "status": status_name(dv.StatusCode.value if dv.StatusCode is not None else 0),
                 "source_timestamp": iso(timestamp_us(dv.SourceTimestamp))}
                for text, dv in zip(texts, results, strict=True)]
    finally:
        await driver.close()


async def _connect(driver: Any) -> None:
    from drivers.base import SourceUnavailable

    try:
        await driver.connect()
    except SourceUnavailable as exc:
        raise _fail(str(exc).removeprefix("diag: ")) from None


def _resolve(text: str, namespaces: list[str]) -> Any:
    """A node id from tag-address syntax; the URI looked up in the server's namespace array."""
    from drivers.opcua import parse_node_address
    from drivers.opcua.values import node_id

    address = parse_node_address(text)  # ValueError with the syntax on a typo
    if address.namespace_index is not None:
        index = address.namespace_index
    elif address.namespace_uri is not None:
        if address.namespace_uri not in namespaces:
            raise LookupError(f"namespace {address.namespace_uri!r} is not on this server "
                              f"(it has: {', '.join(namespaces)})")
        index = namespaces.index(address.namespace_uri)
    else:
        index = 0
    return node_id(address, index)


def _address(nid: ua.NodeId, namespaces: list[str]) -> str:
    """A node id as a tag address, its namespace by URI (indexes can change on a server restart)."""
    text = nid.to_string()
    prefix = f"ns={nid.NamespaceIndex};"
    if nid.NamespaceIndex and nid.NamespaceIndex < len(namespaces) and text.startswith(prefix):
        return f"nsu={namespaces[nid.NamespaceIndex]};{text.removeprefix(prefix)}"
    return text


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return str(value)


# --- diag modbus ------------------------------------------------------------------------------


@modbus_app.command("read")
@_reported
def modbus_read(target: str = typer.Argument(..., help="Device: HOST or HOST:PORT (default port 502)."),
                unit: int = typer.Option(1, "--unit", help="Unit id (device id) 0-255."),
                address: str = typer.Option(..., "--address", help="First address: hr:100, ir:0, co:3, di:7."),
                count: int = typer.Option(1, "--count", help="How many values of --type to read."),
                data_type: str = typer.Option("uint16", "--type", help="int16 uint16 int32 uint32 int64 uint64 "
                                              "float32 float64 bool string (coils/inputs: bool)."),
                order: str = typer.Option("ABCD", "--order", help="Byte order: ABCD, CDAB, BADC or DCBA."),
                length: int | None = typer.Option(None, "--length", help="Registers per string (strings only)."),
                timeout: float = typer.Option(2.0, "--timeout", help="Seconds to wait for the answer."),
                json_out: bool = JsonOption) -> None:
    """Read COUNT values of a type from a Modbus TCP device in one request and show each with its raw
    registers, decoded as the agent decodes them. Exit 1 if the device refuses or does not answer.

    Example: blackbox diag modbus read 127.0.0.1:5020 --unit 1 --address ir:20 --count 3 --type float32 --order ABCD
    """
    host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "502")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(f"device {target!r}: give HOST or HOST:PORT with a port from 1 to 65535, e.g. 192.168.10.21:502",
                    EXIT_USAGE)
    port = int(port_text)
    try:
        tags = _modbus_tags(address, count, data_type, order, length)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    values = asyncio.run(_modbus_read(host, port, unit, timeout, tags))
    rows = [(v["address"], v["raw"], v["value"], v["quality"], v["reason"] or "") for v in values]
    _emit(values, _table(["address", "raw", "value", "quality", "reason"], rows), json_out)
    if any(v["quality"] == "bad" for v in values):
        raise typer.Exit(EXIT_FAILED)


_OPTION_OF = {"type": "--type: ", "order": "--order: ", "length": "--length: ", "address": "--address: "}


def _modbus_tags(address: str, count: int, data_type: str, order: str, length: int | None) -> list[Any]:
    from pydantic import ValidationError

    from drivers.modbus import ModbusTagConfig, parse_address

    try:
        table, start = parse_address(address)
    except ValueError as exc:
        raise ValueError(f"--address: {exc}") from None
    if count < 1:
        raise ValueError("--count must be at least 1")
    tags = []
    step = 1
    for i in range(count):
        fields: dict[str, Any] = {"name": f"v{i}", "address": f"{table}:{start + i * step}", "type": data_type,
                                  "category": "process", "unit": "diag"}
        if table in ("hr", "ir"):
            fields["order"] = order
        if length is not None:
            fields["length"] = length
        try:
            tag = ModbusTagConfig.model_validate(fields)
        except ValidationError as exc:
            raise ValueError("; ".join(f"{_OPTION_OF.get(str(e['loc'][0]) if e['loc'] else '', '')}"
                                       f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
        step = tag.size
        tags.append(tag)
    return tags


async def _modbus_read(host: str, port: int, unit: int, timeout: float, tags: list[Any]) -> list[dict[str, Any]]:
    """One request, decoded by the driver's own blocks; the raw registers kept for display."""
    from drivers.modbus import ModbusSourceConfig, plan_for_source
    from drivers.modbus.answer import LinkError, exception_text
    from drivers.modbus.blocks import Block, Columns
    from drivers.modbus.link import make_link

    config = ModbusSourceConfig.model_validate({
        "name": "diag", "protocol": "modbus", "host": host, "port": port, "unit_id": unit, "timeout": timeout,
        "max_gap": 0, "tags": [t.model_dump() for t in tags]})
    requests = plan_for_source(config)
    if len(requests) != 1:
        raise _fail(f"{len(tags)} values of {tags[0].type} do not fit one request: lower --count", EXIT_USAGE)
    request = requests[0]
    link = make_link(config)
    try:
        try:
            await link.connect()
        except (TimeoutError, OSError, LinkError) as exc:
            raise _fail(f"cannot connect to {host}:{port}: {exc}") from None
        try:
            [answer] = await link.read([request])
        except (TimeoutError, OSError, LinkError) as exc:  # the message names the request
            raise _fail(f"{host}:{port}: {exc}") from None
    finally:
        link.close()
    if answer.exception_code is not None:
        raise _fail(f"the device answered Modbus {exception_text(answer.exception_code)} to {request.describe()}")
    raw = answer.values[:request.count]
    decoded = Columns.good(len(tags))
    Block(request, {t.name: i for i, t in enumerate(tags)}).decode(raw, decoded)
    out = []
    for tag, value, quality, reason in zip(tags, decoded.values, decoded.qualities, decoded.reasons, strict=True):
        offset = tag.register - request.start
        words = raw[offset:offset + tag.size]
        out.append({"address": tag.address, "raw": " ".join(f"{int(w):04X}" for w in words),
                    "value": value, "quality": str(quality), "reason": reason})
    return out
