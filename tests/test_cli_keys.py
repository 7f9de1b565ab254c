"""``keys export --public`` writes the PEM (nothing else) that ``store enroll`` and ``verify-batch`` read."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.seal import load_private_key


def test_the_exported_public_key_enrols(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "blackbox.yaml").write_text("site: {id: S1, name: Site, licence: L-1}\n"
                                            "gateway: {id: gw-1, key_file: keys/gateway.key}\n")
    config = str(tmp_path / "blackbox.yaml")
    assert runner.invoke(app, ["keys", "init", "-c", config]).exit_code == 0
    pub_file = tmp_path / "gw-1.pub.pem"
    result = runner.invoke(app, ["keys", "export", "--public", str(pub_file), "-c", config])
    assert result.exit_code == 0, result.stderr
    text = pub_file.read_text()
    assert text.startswith("-----BEGIN PUBLIC KEY-----\n") and text.endswith("-----END PUBLIC KEY-----\n")
    private = load_private_key(tmp_path / "keys" / "gateway.key")  # relative to the config's folder
    assert load_pem_public_key(text.encode()) == private.public_key()  # cryptography's own parser

    stdout = runner.invoke(app, ["keys", "export", "--public", "-", "-c", config])
    assert stdout.exit_code == 0 and stdout.stdout == text

    db = f"sqlite:///{tmp_path}/store.sqlite"
    enrolled = runner.invoke(app, ["store", "enroll", "gw-1", str(pub_file), "--site", "S1", "--db", db])
    assert enrolled.exit_code == 0, enrolled.stderr
    assert "enrolled key" in enrolled.stdout
