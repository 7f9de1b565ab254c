"""An embedded MQTT broker for the demo and tests: ``mosquitto`` from PATH, else amqtt in-process.

Mosquitto speaks MQTT 5 and is what production uses; amqtt is pure Python and speaks 3.1.1
only, so the clients must be told which protocol to use (:attr:`EmbeddedBroker.protocol`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once something accepts TCP connections on ``host:port``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


class BrokerUnavailable(RuntimeError):
    """Neither Mosquitto nor amqtt (the ``demo`` extra) is installed."""


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, prefer: str = "mosquitto") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._prefer = prefer
        self._proc: subprocess.Popen[bytes] | None = None
        self._amqtt: Any = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.kind: Literal["mosquitto", "amqtt"] = "amqtt"

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        return "5" if self.kind == "mosquitto" else "3.1.1"

    async def start(self) -> None:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
        if self._prefer == "mosquitto" and exe:
            self._dir = tempfile.TemporaryDirectory(prefix="blackbox-broker-")
            conf = Path(self._dir.name) / "mosquitto.conf"
            conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
                            "set_tcp_nodelay true\nmax_queued_messages 100000\n")
            self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            self.kind = "mosquitto"
        else:
            try:
                from amqtt.broker import Broker  # type: ignore[import-untyped]  # amqtt has no type hints; only the fallback needs it
            except ImportError:
                raise BrokerUnavailable("no MQTT broker for the demo: install Mosquitto (apt-get install "
                                        "mosquitto), or the demo extra (pip install 'blackbox[demo]')") from None

            for name in ("amqtt", "transitions"):
                logging.getLogger(name).setLevel(logging.WARNING)
            self._amqtt = Broker({"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                              {"allow_anonymous": True}}})
            await self._amqtt.start()
            self.kind = "amqtt"
        await wait_listening(self.host, self.port)
        log.info("embedded broker (%s) on %s:%d", self.kind, self.host, self.port)

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._proc.wait, 5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._amqtt is not None:
            await self._amqtt.shutdown()
            self._amqtt = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
