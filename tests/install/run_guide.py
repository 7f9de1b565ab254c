"""Follow the install guides' commands on this machine, literally, and end with a verified trace.

    python tests/install/run_guide.py docs/install-store.md docs/install-gateway.md

Every fenced ``sh`` block of each guide is run, in order, as root with ``bash -euxo pipefail``,
from a copy of the source tree (what a release archive holds). So that the run cannot touch the
machine's own services, a few literal strings of the guides are mapped before running (printed at
the start): the standard paths (``/etc/blackbox``, ``/var/lib/blackbox``, ``/opt/blackbox``…) to a
throwaway sandbox folder, the service accounts to throwaway accounts, the PostgreSQL role and
database to throwaway ones, the broker's host and port and the PLC's address to this machine. The
PLC is the simulator (started when the guide starts the agent); the broker, the store and the agent
are the guides' own. Where systemd is not PID 1, ``systemctl`` and ``journalctl`` are replaced by a
stand-in that reads the installed unit file and runs its ``ExecStartPre`` and ``ExecStart`` as its
``User=``, creating its ``StateDirectory``/``RuntimeDirectory`` as systemd would; a ``Type=notify``
unit has started when it sends ``READY=1`` to its ``$NOTIFY_SOCKET`` (a start fails if it exits first
or stays silent for ``READY_TIMEOUT_S``), and a stop waits for the process to exit.

At the end the runner waits for the simulated batch to be recorded, delivered and stored, and runs
``blackbox trace`` on it: the run passes only if the trace's integrity verdict is ``verified``.
Everything it made (processes, accounts, role, database, sandbox) is removed afterwards.
Exit status 0 on success; otherwise the failing block, its guide line and its output.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "var",
        "node_modules"}
SIMULATOR_SPEED = 600.0
IDLE_BEFORE_BATCH_WALL_S = 8.0
BATCH_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 120.0  # systemd's TimeoutStartSec is 90 s by default; the machine may be loaded
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sandbox:
    """Where the guides' standard paths, accounts and services go for this run."""

    root: Path
    """One folder per machine under it: the guides set up a store machine and a gateway machine."""
    machine: str = "gateway"
    tag: str = field(default_factory=lambda: f"bbg{secrets.token_hex(3)}")
    opcua_port: int = field(default_factory=free_port)
    mqtts_port: int = field(default_factory=free_port)

    @property
    def accounts(self) -> dict[str, str]:
        return {"blackbox-store": f"{self.tag}-store", "blackbox": self.tag}

    @property
    def database(self) -> str:
        return f"{self.tag}_store"

    @property
    def here(self) -> Path:
        return self.root / self.machine

    def on(self, machine: str) -> Sandbox:
        return Sandbox(self.root, machine, self.tag, self.opcua_port, self.mqtts_port)

    def paths(self) -> list[tuple[str, str]]:
        return [(p, f"{self.here}{p}") for p in (
            "/etc/blackbox", "/var/lib/blackbox-store", "/var/lib/blackbox", "/opt/blackbox", "/run/blackbox",
            "/etc/systemd/system", "/etc/mosquitto", "/var/backups/blackbox", "/usr/share/doc/blackbox")]

    def map(self, text: str) -> str:
        """The guide's text as it runs here (see the module's docstring)."""
        for literal, here in self.paths():
            text = re.sub(re.escape(literal) + r"(?![\w-])", here, text)
        for name, here in self.accounts.items():
            text = re.sub(rf"(?m)(\buseradd\b.*\s){re.escape(name)}$", rf"\g<1>{here}", text)
            text = re.sub(rf"(root:|-g |-u |-o |-aG |--group |--user |--owner=|--group=){re.escape(name)}"
                          r"(?![\w.-])", rf"\g<1>{here}", text)
        text = text.replace("blackbox_store", self.database)
        text = text.replace("opc.tcp://192.168.10.11:4840", f"opc.tcp://127.0.0.1:{self.opcua_port}")
        text = text.replace("broker.example.com", "localhost")
        return re.sub(r"\b8883\b", str(self.mqtts_port), text)

    def unit_names(self, name: str) -> str:
        return self.accounts.get(name, name)


# --- systemctl and journalctl where systemd is not PID 1 ---------------------------------------


def _state(sandbox: Path) -> Path:
    folder = sandbox / "runner"  # shared by the machines: one process table
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unit_file(sandbox: Sandbox, unit: str) -> tuple[Path, str | None]:
    name, _, instance = unit.removesuffix(".service").partition("@")
    file = Path(f"{sandbox.here}/etc/systemd/system/{name}{'@' if instance else ''}.service")
    return file, instance or None


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait (bounded) until process ``pid`` has exited, through a pidfd: True if it did."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(pidfd)


def _notify_socket() -> tuple[socket.socket, str]:
    """A datagram socket in the abstract namespace, as systemd gives a ``Type=notify`` unit."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    name = f"blackbox-guide-notify-{secrets.token_hex(8)}"
    sock.bind("\0" + name)
    return sock, "@" + name


def _await_ready(sock: socket.socket, proc: subprocess.Popen[bytes]) -> str | None:
    """Wait for ``READY=1`` on ``sock``; ``None`` when it came, else why the start failed."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock.fileno(), pidfd], [], [], left)
            if sock.fileno() in readable and "READY=1" in sock.recv(65536).decode(errors="replace").splitlines():
                return None
            if pidfd in readable:
                return f"exited with {proc.wait()} before it was ready"
        return f"sent no READY=1 within {READY_TIMEOUT_S:.0f} s"
    finally:
        os.close(pidfd)


def _drain_notifications(sock: socket.socket, pid: int) -> None:
    """Keep the unit's notify socket open while it runs (STATUS=, STOPPING=1 must not fail).

    The stand-in itself ends with the ``systemctl`` command, so a detached child reads the socket
    until the service exits.
    """
    if os.fork() != 0:
        sock.close()
        return
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(0)
    while True:
        readable, _, _ = select.select([sock.fileno(), pidfd], [], [])
        if pidfd in readable:
            os._exit(0)
        sock.recv(65536)


def systemctl(sandbox: Sandbox, args: list[str]) -> int:
    verbs = [a for a in args if not a.startswith("-")]
    if not verbs:
        return 0
    verb, units = verbs[0], [u.removesuffix(".service") for u in verbs[1:]]
    state = _state(sandbox.root)
    if verb == "daemon-reload":
        return 0
    if verb == "enable" and "--now" not in args:
        return 0
    code = 0
    for unit in units:
        pid_file, log = state / f"{unit}.pid", state / f"{unit}.log"
        if verb in ("stop", "restart"):
            pid = _alive(pid_file)
            if pid is not None:
                os.killpg(pid, signal.SIGTERM)
                if not _wait_exit(pid, STOP_TIMEOUT_S):
                    os.killpg(pid, signal.SIGKILL)  # as systemd after TimeoutStopSec
        if verb in ("start", "restart", "enable"):
            if _alive(pid_file) is not None:
                continue
            code |= _start(sandbox, unit, pid_file, log)
        elif verb == "reload":
            pid = _alive(pid_file)
            if pid is None:
                return 1
            os.kill(pid, signal.SIGHUP)
        elif verb in ("status", "is-active"):
            alive = _alive(pid_file) is not None
            if verb == "status":
                print(f"{unit}: {'active (running)' if alive else 'inactive (dead)'}")
                if log.exists():
                    print("\n".join(log.read_text(errors="replace").splitlines()[-10:]))
            code |= 0 if alive else 3
    return code


def _start(sandbox: Sandbox, unit: str, pid_file: Path, log: Path) -> int:
    """Start a unit the way systemd would, for the parts the guides' units use."""
    if unit == "postgresql":
        return 0  # the machine's own PostgreSQL: the guides only add a role and a database to it
    if unit == "mosquitto":  # Debian's mosquitto.service
        user, cwd, kind = "root", "/", "notify"
        pre: list[str] = []
        start = f"/usr/sbin/mosquitto -c {sandbox.here}/etc/mosquitto/mosquitto.conf"
    else:
        file, instance = _unit_file(sandbox, unit)
        if not file.exists():
            print(f"systemctl: unit {unit} is not installed ({file})", file=sys.stderr)
            return 5
        settings: dict[str, list[str]] = {}
        for line in file.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and not line.startswith("#"):
                settings.setdefault(key.strip(), []).append(sandbox.map(value.strip().replace("%i", instance or "")))
        user = sandbox.unit_names(settings.get("User", ["root"])[-1])
        cwd = settings.get("WorkingDirectory", ["/"])[-1]
        kind = settings.get("Type", ["simple"])[-1]
        for kind, base in (("StateDirectory", f"{sandbox.here}/var/lib"), ("RuntimeDirectory", f"{sandbox.here}/run")):
            for name in settings.get(kind, []):
                folder = Path(base) / name
                folder.mkdir(parents=True, exist_ok=True)
                mode = int(settings.get(f"{kind}Mode", ["0755"])[-1], 8)
                shutil.chown(folder, user, user)
                folder.chmod(mode)
        pre = settings.get("ExecStartPre", [])
        start = settings["ExecStart"][-1]
        if unit == "blackbox-agent":
            _start_simulator(sandbox)
    as_user = _as(user)
    for command in pre:
        done = subprocess.run(command.split(), cwd=cwd, check=False, **as_user)
        if done.returncode != 0:
            print(f"systemctl: {unit}: ExecStartPre failed ({done.returncode}): {command}", file=sys.stderr)
            return 1
    notify = _notify_socket() if kind in ("notify", "notify-reload") else None
    env = dict(as_user.pop("env", os.environ))
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify[1]
    with log.open("ab") as out:  # the service itself, not a runuser around it: signals reach it (reload)
        proc = subprocess.Popen(start.split(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True, **as_user)
    pid_file.write_text(str(proc.pid))
    if notify is None:
        return 0  # Type=simple: started as soon as it is forked, as systemd says
    failure = _await_ready(notify[0], proc)
    if failure is not None:
        notify[0].close()
        print(f"systemctl: {unit} {failure}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        return 1
    _drain_notifications(notify[0], proc.pid)
    return 0


def _as(user: str) -> dict[str, Any]:
    """Popen arguments to run as ``user`` with its groups, as systemd's User= does."""
    if user == "root":
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid,
            "extra_groups": os.getgrouplist(user, entry.pw_gid),
            "env": {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "USER": user, "LANG": "C.UTF-8"}}


def journalctl(sandbox: Sandbox, args: list[str]) -> int:
    units = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-u"]
    for unit in units:
        log = _state(sandbox.root) / f"{unit.removesuffix('.service')}.log"
        if log.exists():
            sys.stdout.write(log.read_text(errors="replace"))
    return 0


def _start_simulator(sandbox: Sandbox) -> None:
    """The PLC: the simulated line, idle a few seconds, then one batch at 600x, then idle until stopped.

    Returns once the simulator's servers listen: it says so by closing the write end of a pipe.
    """
    ready_read, ready_write = os.pipe()
    code = ("import asyncio, os\nfrom blackbox.sim.runner import Simulator\n"
            "async def main() -> None:\n"
            f"    async with Simulator(seed=3, speed={SIMULATOR_SPEED}, batches=1, opcua_port={sandbox.opcua_port},"
            f" modbus_port=0, durations={{'idle': {IDLE_BEFORE_BATCH_WALL_S * SIMULATOR_SPEED}}}) as sim:\n"
            f"        os.write({ready_write}, b'ready'); os.close({ready_write})\n"
            "        await sim.wait()\n"
            "        await asyncio.Event().wait()  # the line stays idle: the agent sees the batch end\n"
            "asyncio.run(main())\n")
    log = (_state(sandbox.root) / "simulator.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd="/", pass_fds=(ready_write,))
    os.close(ready_write)
    (_state(sandbox.root) / "simulator.pid").write_text(str(proc.pid))
    try:
        readable, _, _ = select.select([ready_read], [], [], READY_TIMEOUT_S)
        if not readable or os.read(ready_read, 5) != b"ready":  # timed out, or it exited first (EOF)
            raise SystemExit(f"FAILED: the simulated PLC did not start (see {log.name})")
    finally:
        os.close(ready_read)


# --- the run ---------------------------------------------------------------------------------


BLOCK_INFO = re.compile(r"^```sh(?: (\w+))?\n(.*?)^```$", re.M | re.S)
DEBIAN_MOSQUITTO_CONF = """# as Debian's mosquitto package installs it (without its log file and pid file)
persistence false
log_dest stdout
include_dir {here}/etc/mosquitto/conf.d
"""


def machine_of(guide: Path) -> str:
    """The machine a guide sets up; a block names another after ``sh`` (e.g. ``sh store``)."""
    return "store" if "store" in guide.stem else "gateway"


def run_guides(guides: list[Path], sandbox: Sandbox, work: Path) -> None:
    for machine in ("store", "gateway"):  # what Debian and its packages put in place
        (sandbox.on(machine).here / "etc" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        conf = sandbox.on(machine).here / "etc" / "mosquitto" / "mosquitto.conf"
        (conf.parent / "conf.d").mkdir(parents=True, exist_ok=True)
        conf.write_text(DEBIAN_MOSQUITTO_CONF.format(here=sandbox.on(machine).here))
    for guide in guides:
        text = guide.read_text(encoding="utf-8")
        for n, match in enumerate(BLOCK_INFO.finditer(text), 1):
            on = sandbox.on(match.group(1) or machine_of(guide))
            shim = f"{sys.executable} {Path(__file__).resolve()} --shim {on.root} {on.machine} {on.tag} " \
                   f"{on.opcua_port} {on.mqtts_port}"
            preamble = (f"systemctl() {{ {shim} systemctl \"$@\"; }}\n"
                        f"journalctl() {{ {shim} journalctl \"$@\"; }}\n")
            line = text.count("\n", 0, match.start()) + 1
            script = on.map(match.group(2))
            print(f"\n===== {guide.name}, block {n} (line {line}), on the {on.machine} machine =====\n{script}",
                  flush=True)
            done = subprocess.run(["bash", "-euxo", "pipefail", "-c", preamble + script], cwd=work, check=False)
            if done.returncode != 0:
                raise SystemExit(f"FAILED: {guide.name} block {n} (line {line}) exited with {done.returncode}")


def check_documentation(sandbox: Sandbox) -> None:
    """Every installed unit's ``Documentation=file://…`` names a file the guide put there."""
    for machine in ("store", "gateway"):
        on = sandbox.on(machine)
        for unit in sorted((on.here / "etc" / "systemd" / "system").glob("*.service")):
            for line in unit.read_text().splitlines():
                if line.startswith("Documentation="):
                    for url in line.removeprefix("Documentation=").split():
                        if url.startswith("file://") and not Path(on.map(url.removeprefix("file://"))).is_file():
                            raise SystemExit(f"FAILED: {unit.name} on the {machine} machine: Documentation={url} "
                                             "is not installed by the guide")
                    print(f"{unit.name}: {line} installed")


def verified_trace(sandbox: Sandbox) -> dict[str, object]:
    """Wait for the simulated batch to be recorded, ended and stored; return its trace (verified)."""
    gateway, store = sandbox.on("gateway").here, sandbox.on("store").here
    blackbox = f"{gateway}/opt/blackbox/bin/blackbox"
    gateway_config = f"{gateway}/etc/blackbox/blackbox.yaml"
    store_config = f"{store}/etc/blackbox/store.yaml"
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    batch = None
    report: dict[str, object] = {}
    while time.monotonic() < deadline:
        if batch is None:
            status = subprocess.run([blackbox, "status", "-c", gateway_config, "--json"], capture_output=True,
                                    text=True, check=False)
            if status.returncode == 0:
                batch = json.loads(status.stdout)["context"]["batch"]
        else:
            trace = subprocess.run([blackbox, "trace", batch, "-c", store_config, "--json"], capture_output=True,
                                   text=True, check=False)
            if trace.returncode == 0:
                report = json.loads(trace.stdout)
                integrity = report.get("integrity")
                if isinstance(integrity, dict) and integrity.get("verdict") == "verified":
                    print(f"\n===== trace {batch}: integrity verified =====")
                    return report
        time.sleep(2)
    raise SystemExit(f"FAILED: no verified trace within {BATCH_TIMEOUT_S:.0f} s (batch {batch}; last report "
                     f"{json.dumps(report)[:2000]})")


def clean_up(sandbox: Sandbox) -> None:
    state = sandbox.root / "runner"
    for pid_file in state.glob("*.pid") if state.exists() else []:
        pid = _alive(pid_file)
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10  # as systemd's stop timeout, shorter: then SIGKILL
    for pid_file in state.glob("*.pid") if state.exists() else []:
        pid = _alive(pid_file)
        if pid is not None:
            _wait_exit(pid, max(deadline - time.monotonic(), 0))
    for pid_file in state.glob("*.pid") if state.exists() else []:
        pid = _alive(pid_file)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
    for account in sandbox.accounts.values():
        subprocess.run(["userdel", account], capture_output=True, check=False)
        subprocess.run(["groupdel", account], capture_output=True, check=False)
    for sql in (f'DROP DATABASE IF EXISTS "{sandbox.database}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{sandbox.database}"'):
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-qc", sql], capture_output=True, check=False)
    shutil.rmtree(sandbox.root, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--shim":
        folder, machine, tag, opcua, mqtts, tool, *args = sys.argv[2:]
        sandbox = Sandbox(Path(folder), machine, tag, int(opcua), int(mqtts))
        return systemctl(sandbox, args) if tool == "systemctl" else journalctl(sandbox, args)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("guides", nargs="+", type=Path)
    parser.add_argument("--keep", action="store_true", help="Leave the sandbox, accounts and processes.")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the guides are followed as root (they create accounts and services)")
    root = Path(f"/tmp/blackbox-guide-{secrets.token_hex(3)}")
    sandbox = Sandbox(root)
    work = root / "release"
    shutil.copytree(REPO, work, symlinks=True,
                    ignore=lambda _d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    print(f"sandbox {root}; accounts {sandbox.accounts}; database {sandbox.database}; "
          f"PLC opc.tcp://127.0.0.1:{sandbox.opcua_port}; broker localhost:{sandbox.mqtts_port}")
    for machine in ("store", "gateway"):
        for literal, here in sandbox.on(machine).paths():
            print(f"  on the {machine} machine: {literal} -> {here}")
    try:
        run_guides([g.resolve() for g in options.guides], sandbox, work)
        check_documentation(sandbox)
        verified_trace(sandbox)
    except BaseException:
        for log in sorted((root / "runner").glob("*.log")):  # what the services said, for the diagnosis
            print(f"\n===== {log.name} (last lines) =====\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-25:]))
        raise
    finally:
        if not options.keep:
            clean_up(sandbox)
    return 0


if __name__ == "__main__":
    sys.exit(main())
