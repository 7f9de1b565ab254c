"""Every command, run as a process with its typical mistakes: a clear one-line error, the right exit
status, and never a Python traceback.

The table names, per case, the arguments, the exit status (2: a usage mistake; 1: something missing,
unreachable or refused at run time) and words the error line must contain (the file, option or
address at fault). Placeholders in braces are filled from the fixture's files and ports. All cases
run concurrently in one fixture (each is a separate ``python -m blackbox`` process); each case is
then its own test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.seal import generate_key_file, public_key_pem


@dataclass(frozen=True)
class Case:
    args: str
    exit: int
    words: tuple[str, ...]
    json: bool = False
    """The command was given --json: stdout must still be one JSON document."""
    process: bool = False
    """Run as its own process (it handles signals or serves ports) rather than in this one."""
    prefix: str = "error: "
    """How the message line starts: a configuration's problems start with its file name (file:line: field:
    reason), verify-batch reports file by file."""


def case(args: str, exit_code: int, *words: str, json_out: bool = False, process: bool = False,
         prefix: str = "error: ") -> Case:
    return Case(args, exit_code, words, json_out, process, prefix)


CASES = [
    # --- the top level
    case("--log-level LOUD status -c {gw}", 2, "--log-level", "LOUD"),
    case("status --json true -c {gw}", 2, "true"),
    case("no-such-command", 2, "no-such-command"),
    # --- configuration files
    case("config check {missing}", 2, "{missing}", "No such file", prefix="{missing}"),
    case("config check {bad_yaml}", 2, "{bad_yaml}:2", "not valid YAML", prefix="{bad_yaml}"),
    case("config check {typo}", 2, "{typo}:4", "gateway.kye_file", prefix="{typo}"),
    case("config check {dir}", 2, "{dir}", prefix="{dir}"),
    case("run -c {missing}", 2, "{missing}", prefix="{missing}"),
    case("run -c {gw} --log-level INFO", 2, "--log-level"),
    # --- the running agent, which is not running
    case("status", 2, "--config"),
    case("status -c {gw}", 1, "{tmp}/agent.sock"),
    case("status -c {gw} --json", 1, "{tmp}/agent.sock"),
    case("tail -c {gw}", 1, "{tmp}/agent.sock"),
    case("tail -c {gw} --count -3", 2, "--count"),
    # as processes, status and tail read their usual arguments without typer and leave the rest to it
    case("--log-level INFO tail -c {gw} --count -3", 2, "--count", process=True),
    case("--log-level INFO tail -c {gw} --unit EM-01 -n 1", 1, "{tmp}/agent.sock", process=True),
    case("status -c {gw} --unit", 2, "--unit"),
    case("--log-level INFO status -c {gw} --unit", 2, "--unit", process=True),
    case("status -c {gw} --all --tag EM-01.* -u EM-01", 1, "{tmp}/agent.sock"),
    case("--log-level INFO status -c {gw} --all --tag EM-01.* -u EM-01", 1, "{tmp}/agent.sock", process=True),
    case("--log-level INFO status -c {gw} --json -t x", 1, "{tmp}/agent.sock", process=True),
    case("status -c {missing}", 2, "{missing}", "No such file", prefix="{missing}"),
    case("tail -c {bad_yaml}", 2, "{bad_yaml}:2", "not valid YAML", prefix="{bad_yaml}"),
    case("status -c {dir} --json", 2, "{dir}", prefix="{dir}"),
    case("alarms list -c {gw}", 1, "{tmp}/agent.sock"),
    case("alarms ack threshold:X -c {gw}", 1, "{tmp}/agent.sock"),
    case("alarms shelve X -c {gw} --for soon --reason r", 2, "soon"),
    case("alarms top -c {gw} --hours lots", 2, "--hours"),
    case("batch start B-1 --product P -c {gw}", 1, "{tmp}/agent.sock"),
    case("batch end -c {gw}", 1, "{tmp}/agent.sock"),
    case("material add --material M --lot L --target x --actual 1 --scale S -c {gw}", 2, "--target"),
    case("qc add --test pH --value 5 --sample S1 -c {gw}", 1, "{tmp}/agent.sock"),
    case("keys rotate -c {gw}", 1, "{tmp}/agent.sock"),
    # --- keys
    case("keys show", 2, "--config or --key"),
    case("keys show -c {gw}", 1, "{tmp}/gateway.key", "does not exist"),
    case("keys show --key {not_key}", 1, "{not_key}"),
    case("keys export --public {tmp}/out.pem -c {gw}", 1, "{tmp}/gateway.key", "does not exist"),
    case("keys export --public /proc/no/such/dir/pub.pem --key {key}", 1, "/proc/no/such/dir/pub.pem"),
    case("keys init --key {key}", 1, "{key}", "already exists"),
    case("keys init --key /proc/no/such/dir/gateway.key", 1, "/proc/no/such/dir/gateway.key"),
    # --- the store
    case("store enroll gw-1 {not_key} --site S1 --db sqlite:///{tmp}/enroll.sqlite", 2, "{not_key}"),
    case("store enroll gw-1 {missing}.pem --site S1 --db sqlite:///{tmp}/enroll.sqlite", 2, "{missing}.pem"),
    case("store enroll gw-1 {pub} --site S1 --db notaurl", 2, "notaurl"),
    case("store enroll gw-1 {pub} --site S1 --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("store enroll gw-1 {pub} --site S1", 2, "--config or --db"),
    case("store serve -c {store_pg_closed}", 1, "{closed}"),
    case("store serve -c {typo}", 2, "{typo}", prefix="{typo}"),
    case("store migrate --db notaurl", 2, "notaurl"),
    case("store migrate --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("trace B-1 --db notaurl", 2, "notaurl"),
    case("trace B-1 --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("trace B-1 --db sqlite:///{tmp}/nothing-here.sqlite", 1, "{tmp}/nothing-here.sqlite"),
    case("trace B-1 -c {store_missing_db}", 1, "{tmp}/store-dir/store.sqlite"),
    case("store gateways --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("store gateways --db sqlite:///{tmp}/nothing-here.sqlite", 1, "{tmp}/nothing-here.sqlite"),
    case("store export gw-1 --site S1 --out {tmp}/export --db sqlite:///{tmp}/nothing-here.sqlite", 1,
         "nothing-here.sqlite"),
    case("store verify --db notaurl", 2, "notaurl"),
    case("store verify --since yesterday --db sqlite:///{tmp}/nothing-here.sqlite", 2, "--since"),
    case("verify-batch {missing}.bbx --key {not_key}", 2, "{not_key}"),
    case("verify-batch {missing}.bbx --key {pub}", 1, "cannot read", prefix="{missing}.bbx: REJECTED"),
    case("verify-checkpoint {missing}.txt --key garbage", 1, "malformed verifier key", "garbage", prefix="FAILED: "),
    case("store checkpoint --db notaurl --key {key} --origin o", 2, "notaurl"),
    case("store proof --entry 0 --db sqlite:///{tmp}/nothing-here.sqlite", 1, "nothing-here.sqlite"),
    case("store retention --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("store token add ana --role regulator --db notaurl", 2, "database URL"),
    case("store token add ana --role emperor --db sqlite:///{tmp}/nothing-here.sqlite", 2, "emperor"),
    case("store token list --db notaurl", 2, "database URL"),
    case("store token revoke 7 --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("store user add ana --role regulator --site S1 --db notaurl", 1, "aborted"),  # no password typed
    case("store user disable ana --db notaurl", 2, "database URL"),
    case("store golden set S1 B-1 --db sqlite:///{tmp}/no-golden-store.sqlite", 1, "{tmp}/no-golden-store.sqlite"),
    case("store golden set S1 B-1 --occurrence 0 --db sqlite:///{tmp}/nothing-here.sqlite", 2, "--occurrence"),
    case("store golden withdraw S1 FC-050 --db notaurl", 2, "database URL"),
    case("store golden list --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("store keys init", 2, "--config"),
    case("store keys show -c {store_missing_db}", 1, "store.key"),
    case("store approver enroll {not_key} --site S1 --role qa --db sqlite:///{tmp}/nothing-here.sqlite", 1,
         "Ed25519 public key"),
    case("store spec add {missing}.json --site S1 --db sqlite:///{tmp}/nothing-here.sqlite", 2, "{missing}.json"),
    case("store spec list --site S1 --db postgresql://127.0.0.1:{closed}/x", 1, "{closed}"),
    case("store action new {tmp}/action.json --action explode --site S1 --gateway gw-1 --reason r", 2, "reenroll"),
    case("store action sign {missing}.json --role qa --key {key} --signer ana", 2, "{missing}.json"),
    case("store action apply {missing}.json --db sqlite:///{tmp}/nothing-here.sqlite", 2, "{missing}.json"),
    case("store web -c {typo}", 2, "{typo}", prefix="{typo}"),
    case("batches --db notaurl", 2, "notaurl"),
    case("receipts -c {gw}", 1, "{tmp}/buffer.sqlite"),
    case("config reference --nope", 2, "--nope"),
    case("alarms unshelve X -c {gw}", 1, "{tmp}/agent.sock"),
    case("alarms out-of-service X -c {gw}", 2, "--reason"),
    case("alarms in-service X -c {gw}", 1, "{tmp}/agent.sock"),
    case("batch phase mix -c {gw}", 1, "{tmp}/agent.sock"),
    case("spec new {tmp}/spec.json --reason r --from {missing}.json", 2, "{missing}.json"),
    case("spec show {missing}.json", 2, "{missing}.json"),
    case("spec diff {missing}.json {not_key}", 2, "{missing}.json"),
    case("spec sign {missing}.json --role qa --key {key} --signer ana", 2, "{missing}.json"),
    case("spec verify {missing}.json", 2, "--config"),
    case("spec keys init --role qa --key {key}", 1, "{key}", "already exists"),
    case("genealogy A-5501 --db sqlite:///{tmp}/no-genealogy.sqlite", 1, "{tmp}/no-genealogy.sqlite"),
    case("genealogy A-5501 --site", 2, "--site"),
    case("batch release B-1", 2, "Missing"),
    case("material verify W-1", 2, "Missing"),
    case("operator add li.na", 2, "Missing"),
    case("operator list -c {gw}", 1, "{tmp}/agent.sock"),
    case("operator unlock li.na", 2, "--config"),
    case("deviation close DEV-3", 2, "Missing"),
    case("cleaning record V-101 --method CIP --agent NaOH --start yesterday --end now", 2, "--start"),
    case("lot register L-1", 2, "Missing"),
    case("lot produce L-1", 2, "Missing"),
    # --- diagnosis of sources
    case("diag sources -c {gw}", 1, "127.0.0.1:{closed}", json_out=False),
    case("diag sources -c {gw} --json", 1, "127.0.0.1:{closed}", json_out=True),
    case("diag plan -c {missing}", 2, "{missing}", prefix="{missing}"),
    case("diag modbus read 127.0.0.1:abc --address hr:0", 2, "127.0.0.1:abc", "port"),
    case("diag modbus read 127.0.0.1:abc --address hr:0 --json", 2, "127.0.0.1:abc", json_out=True),
    case("diag modbus read 127.0.0.1 --address hr:0 --type float", 2, "--type", "float32"),
    case("diag modbus read 127.0.0.1 --address zz:0", 2, "--address", "zz:0"),
    case("diag modbus read 127.0.0.1 --address hr:0 --order XYZ", 2, "--order"),
    case("diag modbus read 127.0.0.1 --address hr:0 --count 0", 2, "--count"),
    case("diag modbus read 127.0.0.1:{closed} --address hr:0 --timeout 1", 1, "127.0.0.1:{closed}"),
    case("diag modbus read 127.0.0.1:{closed} --address hr:0 --timeout 1 --json", 1, "127.0.0.1:{closed}",
         json_out=True),
    case("diag opcua read opc.tcp://127.0.0.1:{closed} i=2258", 1, "127.0.0.1:{closed}"),
    case("diag opcua browse opc.tcp://127.0.0.1:{closed} --json", 1, "127.0.0.1:{closed}", json_out=True),
    case("diag opcua read notaurl i=2258", 2, "notaurl"),
    case("diag opcua read opc.tcp://127.0.0.1:{closed} i=2258 --security Loud", 2, "Loud"),
    # --- the simulator and the demo
    case("simulate --opcua-port {busy} --modbus-port 0", 1, "{busy}", "--opcua-port", process=True),
    case("simulate --speed fast", 2, "--speed", process=True),
    case("demo --dir /proc/no/such/dir", 1, "/proc/no/such/dir", process=True),
    case("run -c {gw}", 1, "{tmp}/gateway.key", "does not exist", process=True),
]


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("mistakes")
    closed = _free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    (tmp / "gw.yaml").write_text(f"""\
site: {{id: S1, name: Site, licence: L-1}}
gateway: {{id: gw-1, key_file: gateway.key}}
agent: {{control_socket: agent.sock}}
buffer: {{path: buffer.sqlite}}
sources:
  - name: press
    protocol: modbus
    host: 127.0.0.1
    port: {closed}
    timeout: 0.5
    tags:
      - {{name: P-01.pressure, address: "hr:0", type: uint16, category: process, unit: P-01}}
""")
    (tmp / "bad.yaml").write_text("site: [\n")
    (tmp / "typo.yaml").write_text("site: {id: S1, name: Site, licence: L-1}\ngateway:\n  id: gw-1\n"
                                   "  kye_file: x\n")
    (tmp / "store-pg-closed.yaml").write_text(f"store:\n  database_url: postgresql://127.0.0.1:{closed}/x\n")
    (tmp / "store-missing-db.yaml").write_text("store:\n  database_url: sqlite:///store-dir/store.sqlite\n")
    (tmp / "not-a-key.pem").write_text("key id abc\nfingerprint SHA256:xyz\n")
    (tmp / "dir").mkdir()
    key = generate_key_file(tmp / "existing.key")
    (tmp / "existing.pub.pem").write_text(public_key_pem(key.public_key()))
    values = {"tmp": str(tmp), "gw": str(tmp / "gw.yaml"), "missing": str(tmp / "missing.yaml"),
              "bad_yaml": str(tmp / "bad.yaml"), "typo": str(tmp / "typo.yaml"), "dir": str(tmp / "dir"),
              "store_pg_closed": str(tmp / "store-pg-closed.yaml"),
              "store_missing_db": str(tmp / "store-missing-db.yaml"), "not_key": str(tmp / "not-a-key.pem"),
              "key": str(tmp / "existing.key"), "pub": str(tmp / "existing.pub.pem"), "closed": str(closed),
              "busy": str(busy.getsockname()[1])}
    yield values
    busy.close()


@pytest.fixture(scope="module")
def outcomes(files: dict[str, str]) -> dict[str, Outcome]:
    """Run every case once: most in this process (as the console script does, through the app's
    top-level group), those that serve ports or handle signals as processes of their own."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("BLACKBOX_DEBUG", None)

    def in_process(args: list[str]) -> Outcome:
        result = CliRunner().invoke(app, args, env={"BLACKBOX_DEBUG": ""})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # escaped the app's own handling: a bug in the test or the app
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def as_process(args: list[str]) -> Outcome:
        proc = subprocess.run([sys.executable, "-m", "blackbox", *args], capture_output=True, text=True,
                              timeout=60, env=env, stdin=subprocess.DEVNULL, check=False)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    with ThreadPoolExecutor(2) as pool:
        processes = {c.args: pool.submit(as_process, [a.format(**files) for a in c.args.split()])
                     for c in CASES if c.process}
        done = {c.args: in_process([a.format(**files) for a in c.args.split()]) for c in CASES if not c.process}
        return {**done, **{args: future.result() for args, future in processes.items()}}


@pytest.mark.parametrize("c", CASES, ids=[c.args for c in CASES])
def test_a_mistake_is_one_clear_line(c: Case, outcomes: dict[str, Outcome], files: dict[str, str]) -> None:
    out = outcomes[c.args]
    shown = f"exit {out.code}\nstdout: {out.stdout[-1500:]}\nstderr: {out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr + out.stdout, shown
    assert out.code == c.exit, shown
    prefix = c.prefix.format(**files)
    errors = [line for line in out.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, f"expected one {prefix!r} line\n{shown}"
    for word in c.words:
        assert word.format(**files) in errors[0], f"{word.format(**files)!r} not named\n{shown}"
    if c.json:  # still one JSON document: the error, or the results with their errors
        doc = json.loads(out.stdout)
        assert doc["error"] if isinstance(doc, dict) else all(r["last_error"] for r in doc), shown


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """An unexpected error is one line; with --debug it is the whole traceback."""
    url = f"sqlite:///{tmp_path}/x.sqlite"
    plain = subprocess.run([sys.executable, "-c", _RAISE, url], capture_output=True, text=True, check=False)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr, plain.stderr
    assert plain.stderr.strip().splitlines() == ["error: unexpected ZeroDivisionError: boom (run again with "
                                                 "blackbox --debug … for the traceback, and report it)"]
    debug = subprocess.run([sys.executable, "-c", _RAISE, url, "--debug"], capture_output=True, text=True,
                           check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ZeroDivisionError: boom" in debug.stderr


_RAISE = """
import sys
from blackbox.cli import main
@main.app.command("explode")
def explode() -> None:
    raise ZeroDivisionError("boom")
main.plain_help(main.app)
debug = ["--debug"] if "--debug" in sys.argv else []
main.app(debug + ["explode"], prog_name="blackbox")
"""


def test_every_command_has_cases() -> None:
    """A new command comes with its typical mistakes in the table above."""
    import typer.main

    paths: list[str] = []

    def walk(cmd: object, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            paths.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    tested = [" ".join(w for w in c.args.split() if not w.startswith(("-", "{"))) for c in CASES]
    missing = [p for p in paths if not any(t == p or t.startswith(p + " ") for t in tested)]
    assert not missing, f"commands without mistake cases in tests/test_cli_mistakes.py: {missing}"
