"""Basic256Sha256 Sign and SignAndEncrypt against asyncua servers that require them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua
from ua_certs import make_certificate

from blackbox.model import Quality
from drivers.base import SourceUnavailable
from drivers.opcua import OpcUaDriver, OpcUaSourceConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "urn:blackbox:test:secure"
CLIENT_URI = "urn:blackbox:test:gateway"


async def stop(server: Server) -> None:
    task = server.iserver.time_task
    if task is not None:  # asyncua's clock sleeps 1 s between ticks and stop() would wait for it
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.iserver.time_task = None
    await server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("certs")
    server_cert, server_key = make_certificate(directory, "server", "urn:blackbox:test:server", server=True)
    client_cert, client_key = make_certificate(directory, "gateway", CLIENT_URI)
    return {"server_cert": server_cert, "server_key": server_key, "cert": client_cert, "key": client_key}


async def secure_server(certs: dict[str, Path], policy: ua.SecurityPolicyType) -> tuple[Server, str]:
    """A server offering only ``policy``, and its endpoint."""
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/")
    server.set_security_policy([policy])
    await server.load_certificate(str(certs["server_cert"]))
    await server.load_private_key(str(certs["server_key"]))
    idx = await server.register_namespace(NS)
    await server.nodes.objects.add_variable(ua.NodeId(ua.String("EM-01.temperature"), ua.Int16(idx)), "temperature",
                                            ua.Variant(75.5, ua.VariantType.Double))
    await server.start()
    assert server.bserver is not None  # started
    endpoint = f"opc.tcp://127.0.0.1:{server.bserver.port}"
    return server, endpoint


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def encrypting(certs: dict[str, Path]) -> AsyncIterator[str]:
    server, endpoint = await secure_server(certs, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
    yield endpoint
    await stop(server)


def source(endpoint: str, security: str, certs: dict[str, Path] | None = None, **extra: Any) -> OpcUaSourceConfig:
    settings: dict[str, Any] = {"security": security}
    if certs is not None:
        settings |= {"certificate": str(certs["cert"]), "private_key": str(certs["key"])}
    return OpcUaSourceConfig.model_validate({
        "name": "secure", "protocol": "opcua", "endpoint": endpoint, "namespace_uri": NS, "timeout": 3.0,
        **settings, **extra,
        "tags": [{"name": "t", "address": "s=EM-01.temperature", "type": "Double", "category": "process",
                  "unit": "EM-01"}],
    })


async def read_once(config: OpcUaSourceConfig) -> tuple[OpcUaDriver, float | None]:
    driver = OpcUaDriver(config)
    await driver.connect()
    try:
        samples = await driver.read()
    finally:
        await driver.close()
    assert samples[0].quality is Quality.GOOD
    value = samples[0].value
    assert isinstance(value, float)
    return driver, value


async def test_sign_and_encrypt_with_a_client_certificate(encrypting: str, certs: dict[str, Path]) -> None:
    driver, value = await read_once(source(encrypting, "SignAndEncrypt", certs))
    assert value == 75.5
    assert driver.health.details["security"] == "SignAndEncrypt"


async def test_the_servers_certificate_can_be_pinned(encrypting: str, certs: dict[str, Path]) -> None:
    _, value = await read_once(source(encrypting, "SignAndEncrypt", certs,
                                      server_certificate=str(certs["server_cert"])))
    assert value == 75.5


async def test_an_unsecured_client_is_refused_by_a_server_that_requires_encryption(encrypting: str) -> None:
    driver = OpcUaDriver(source(encrypting, "None"))
    with pytest.raises(SourceUnavailable, match="cannot connect"):
        await driver.connect()
    assert not driver.health.connected


async def test_sign_only(certs: dict[str, Path]) -> None:
    server, endpoint = await secure_server(certs, ua.SecurityPolicyType.Basic256Sha256_Sign)
    try:
        _, value = await read_once(source(endpoint, "Sign", certs))
        assert value == 75.5
        # a client that asks for encryption finds no such endpoint on a Sign-only server
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            await OpcUaDriver(source(endpoint, "SignAndEncrypt", certs)).connect()
    finally:
        await stop(server)


async def test_a_file_that_is_no_certificate_is_named(encrypting: str, certs: dict[str, Path],
                                                      tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-cert.der"
    garbage.write_bytes(b"\x00\x01garbage")
    config = source(encrypting, "SignAndEncrypt", certs).model_copy(update={"certificate": garbage})
    with pytest.raises(SourceUnavailable, match=r"not-a-cert\.der is not an X\.509 certificate"):
        await OpcUaDriver(config).connect()
