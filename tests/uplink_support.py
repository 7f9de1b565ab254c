"""Real parts for the uplink and delivery tests: a Mosquitto of our own, certificates, processes.

``Mosquitto`` runs ``/usr/sbin/mosquitto`` on a free port with the configuration a test needs
(TLS with client certificates, a password file, persistence) and can be SIGKILLed and restarted on
the same port. ``Pki`` makes a CA, a server certificate and client certificates with
``cryptography``. The process helpers start ``blackbox run`` and ``blackbox store serve`` and poll
their state with bounded timeouts.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from services import free_port_block, unavailable
from store_key import STORE_VKEY
from waiting import eventually, wait_until

from blackbox.control_client import AgentUnreachable, call
from blackbox.demo import DEMO_CONFIG, write_config

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BLACKBOX = [sys.executable, "-m", "blackbox", "--log-level", "WARNING"]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False






# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


class Pki:
    """A throwaway CA in ``directory`` that issues server and client certificates."""

    def __init__(self, directory: Path, name: str = "blackbox test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name.replace(' ', '-')}.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool = False) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(self.directory / f"{cn}.crt", self.directory / f"{cn}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        files.key.chmod(0o600)
        return files


# -- the broker --------------------------------------------------------------------------------


class Mosquitto:
    """A Mosquitto process of the test's own on 127.0.0.1, which it may kill and restart."""

    def __init__(self, directory: Path, *, port: int | None = None, persistence: bool = False,
                 tls: tuple[Path, CertFiles] | None = None, require_certificate: bool = True,
                 passwords: dict[str, str] | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            unavailable(f"mosquitto ({MOSQUITTO})")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port_block(1)  # restarted on it: outside the ephemeral range, no client takes it
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "mosquitto.log"
        lines = [f"listener {self.port} {self.host}", "set_tcp_nodelay true", "max_queued_messages 100000",
                 f"persistence {'true' if persistence else 'false'}", f"persistence_location {directory}/",
                 "log_type error", "log_type warning", "log_type notice", "connection_messages true"]
        if os.geteuid() == 0:  # as root, mosquitto would drop to its own user, who cannot read our temp files
            lines.append("user root")
        if tls is not None:
            ca, server = tls
            lines += [f"cafile {ca}", f"certfile {server.cert}", f"keyfile {server.key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        if passwords is not None:
            pw = directory / "passwords"
            pw.write_text("".join(f"{user}:{secret}\n" for user, secret in passwords.items()))
            pw.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            lines += [f"password_file {pw}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        assert self.proc is None, "already running"
        with open(self.log, "ab") as log:
            self.proc = proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_until(lambda: port_open(self.host, self.port) or proc.poll() is not None, 10,
                   f"mosquitto to listen on {self.port}")
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited at start:\n{self.log.read_text()}")
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no session saved."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# -- blackbox processes ------------------------------------------------------------------------


def cli(*args: str) -> str:
    proc = subprocess.run([*BLACKBOX, *args], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"blackbox {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def gateway_config(workdir: Path, *, opcua_port: int, modbus_port: int, mqtt: dict[str, Any], database_url: str,
                   store_mqtt: dict[str, Any], overrides: dict[str, Any] | None = None) -> Path:
    """The demo line's configuration for this run, without alarm rules (not what these tests are about)."""
    path = write_config(DEMO_CONFIG, workdir, opcua_port=opcua_port, modbus_port=modbus_port, mqtt=mqtt,
                        database_url=database_url, store_mqtt=store_mqtt)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["rules"] = []
    for section, values in (overrides or {}).items():
        data[section] = {**data.get(section, {}), **values}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def enroll_gateway(config: Path, workdir: Path, gateway: str = "gw-cream-01", site: str = "SH-FX-01") -> Path:
    """``keys init`` for the gateway, then ``store enroll`` its public key; returns the PEM file."""
    cli("keys", "init", "-c", str(config))
    pem = workdir / "gateway.pub.pem"
    pem.write_text(cli("keys", "show", "-c", str(config)).split("\n\n", 1)[1])
    cli("store", "enroll", gateway, str(pem), "--site", site, "-c", str(config))
    return pem


class Process:
    """A ``blackbox`` subprocess with its log file."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Process:
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([*BLACKBOX, *self.args], env=env, stdout=log, stderr=log)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout} s:\n{self.tail()}") from None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def agent_status(sock: Path) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = call(sock, "status", timeout=2)
    except (AgentUnreachable, OSError):
        return None
    return result


def uplink(sock: Path) -> dict[str, Any]:
    """The ``uplink`` and ``buffer`` parts of the agent's status, merged (empty while unreachable)."""
    st = agent_status(sock)
    return {} if st is None else {**st["buffer"], **st["uplink"]}


# -- the agent's delivery path, in process -----------------------------------------------------


class Pipeline:
    """Buffer → Sealer → Forwarder → UplinkSession of one gateway, on the test's event loop.

    Real parts throughout (SQLite buffer, the agent's sealer and forwarder, paho to a real broker);
    only the drivers and the recorder are left out: records are committed to the buffer directly.
    """

    def __init__(self, workdir: Path, mqtt: Any, *, key: Any = None, seal: dict[str, Any] | None = None,
                 uplink: dict[str, Any] | None = None, site: str = "SH-PD-01", gateway: str = "gw-01",
                 client_id: str | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from blackbox.agent.sealer import Sealer
        from blackbox.buffer import Buffer
        from blackbox.config import SealConfig, UplinkConfig
        from blackbox.seal import generate_key_file, load_private_key
        from blackbox.topics import GatewayTopics
        from blackbox.uplink import Forwarder

        self.workdir = workdir
        self.key_file = workdir / "gateway.key"
        if key is None and not self.key_file.exists():
            generate_key_file(self.key_file)
        self.key = key if key is not None else load_private_key(self.key_file)
        self.mqtt = mqtt
        self.topics = GatewayTopics(mqtt.topic_root, site, gateway)
        self.client_id = client_id or f"agent-{os.urandom(4).hex()}"
        self._executor = ThreadPoolExecutor(max_workers=1)
        self.buffer = Buffer(workdir / "buffer.sqlite")
        self.uplink_cfg = UplinkConfig(mqtt=mqtt, **{"store_key": STORE_VKEY, **(uplink or {})})
        self.forwarder = Forwarder(self.buffer, self.db, self.topics, self.uplink_cfg)
        self.sealer = Sealer(self.buffer, self.db, self.key, SealConfig(**(seal or {})), site, gateway, "c" * 64,
                             on_sealed=self.forwarder.notify, key_file=self.key_file)
        self.session: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def db(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def commit(self, n: int, tag: str = "T", events: list[Any] | None = None) -> Any:
        """Commit ``n`` readings (values 0..n-1 as floats) and ``events`` in one buffer transaction."""
        from blackbox.model import Context, Sample

        samples = [Sample(f"{tag}-{i % 50}", float(i) + 0.5) for i in range(n)]
        return await self.db(self.buffer.commit, samples, events or [], Context(batch="B-1", phase="p"))

    async def start(self, *, seal: bool = True, forward: bool = True) -> Pipeline:
        from blackbox.uplink import UplinkSession

        loop = asyncio.get_running_loop()
        await self.sealer.start()
        await self.forwarder.refresh_delivered()
        if forward:
            self.session = UplinkSession(self.mqtt, self.topics, self.client_id, loop,
                                         on_ack=self.forwarder.on_ack, on_connected=self.forwarder.reconnected)
            self.forwarder.session = self.session
            self.session.start()
            self._tasks.append(loop.create_task(self.forwarder.run()))
        if seal:
            self._tasks.append(loop.create_task(self.sealer.run()))
        return self

    async def connected(self, timeout: float = 10) -> None:
        await eventually(lambda: self.session is not None and self.session.connected, timeout,
                               "the uplink to connect")

    async def delivered(self, timeout: float = 30) -> None:
        """Wait until the store has acknowledged every record committed so far."""
        await self.sealer.flush()
        await asyncio.wait_for(self.forwarder.wait_delivered(self.buffer.last_seq), timeout)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.session is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.session.stop)
            self.session = None
        await self.db(self.buffer.close)
        self._executor.shutdown(wait=True)
