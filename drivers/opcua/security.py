"""Message security for OPC UA: Basic256Sha256 Sign or SignAndEncrypt with a client certificate.

A server accepts a client whose certificate it trusts and whose ApplicationUri (sent when the
session is created) is the URI in the certificate's SubjectAltName; so the client's application
URI is taken from the certificate rather than configured twice.
"""

from __future__ import annotations

from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

from drivers.opcua.config import OpcUaSourceConfig

MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


class SecuritySetupError(Exception):
    """The client certificate, key or server certificate cannot be used; the message says why."""


def certificate_uri(path: Path) -> str | None:
    """The URI SubjectAltName of a PEM or DER certificate (``None`` if it has none)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecuritySetupError(f"cannot read certificate {path}: {exc.strerror or exc}") from exc
    try:
        cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") \
            else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SecuritySetupError(f"{path} is not an X.509 certificate (PEM or DER): {exc}") from exc
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


async def apply_security(client: Client, cfg: OpcUaSourceConfig) -> None:
    """Configure ``client`` for the source's security mode (nothing for ``None``); before ``connect``.

    Without a configured server certificate, asyncua asks the server for its endpoints over an
    unsecured channel and takes the certificate of the matching endpoint.
    """
    if cfg.security == "None":
        return
    if cfg.certificate is None or cfg.private_key is None:
        raise RuntimeError("internal error: no certificate or private_key (the config model requires them)")
    uri = certificate_uri(cfg.certificate)
    if uri is not None:
        client.application_uri = uri
    for what, path in (("private key", cfg.private_key), ("server certificate", cfg.server_certificate)):
        if path is not None and not path.is_file():
            raise SecuritySetupError(f"{what} {path} does not exist or is not a file")
    password = cfg.private_key_password.get_secret_value() if cfg.private_key_password else None
    await client.set_security(SecurityPolicyBasic256Sha256, certificate=str(cfg.certificate),
                              private_key=str(cfg.private_key), private_key_password=password,
                              server_certificate=str(cfg.server_certificate) if cfg.server_certificate else None,
                              mode=MODES[cfg.security])
