"""Paths in a configuration file resolve against the file's folder; a store file needs only ``store:``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blackbox.config import ConfigError, load_config, load_store_config

GATEWAY = """\
site: {id: S1, name: Site, licence: L-1}
gateway: {id: gw-1, key_file: keys/gateway.key}
agent: {control_socket: run/agent.sock}
buffer: {path: /abs/buffer.sqlite}
uplink: {mqtt: {tls: {ca_file: tls/ca.pem}}}
store: {database_url: "sqlite:///var/store.sqlite"}
"""


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "blackbox.yaml").write_text(GATEWAY)
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the shell's directory must not matter
    cfg = load_config(os.path.relpath(folder / "blackbox.yaml")).config
    assert cfg.gateway.key_file == folder / "keys" / "gateway.key"
    assert cfg.agent.control_socket == folder / "run" / "agent.sock"
    assert cfg.buffer.path == Path("/abs/buffer.sqlite")  # absolute: untouched
    assert cfg.uplink.mqtt.tls is not None and cfg.uplink.mqtt.tls.ca_file == folder / "tls" / "ca.pem"
    assert cfg.store.database_url == f"sqlite:///{folder}/var/store.sqlite"


@pytest.mark.parametrize(("text", "url"), [
    ("store: {database_url: 'sqlite:///store.sqlite'}", "sqlite:///{folder}/store.sqlite"),
    ("store: {database_url: 'sqlite:////srv/store.sqlite'}", "sqlite:////srv/store.sqlite"),
    ("store: {database_url: 'sqlite:///:memory:'}", "sqlite:///:memory:"),
    ("store: {database_url: 'postgresql+psycopg://blackbox@db/store'}", "postgresql+psycopg://blackbox@db/store"),
    ("store: {}", "sqlite:///{folder}/var/store.sqlite"),
])
def test_a_store_file_needs_only_the_store_section(tmp_path: Path, text: str, url: str) -> None:
    (tmp_path / "store.yaml").write_text(text + "\n")
    assert load_store_config(tmp_path / "store.yaml").database_url == url.format(folder=tmp_path)


def test_a_store_file_with_a_typo_is_reported_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "store.yaml").write_text("store:\n  database_url: sqlite:///x\n  mqtt: {hots: broker}\n")
    with pytest.raises(ConfigError) as err:
        load_store_config(tmp_path / "store.yaml")
    assert [str(i) for i in err.value.issues] == [f"{tmp_path}/store.yaml:3: store.mqtt.hots: Extra inputs are "
                                                  "not permitted"]


def test_a_gateway_file_still_needs_site_and_gateway(tmp_path: Path) -> None:
    (tmp_path / "blackbox.yaml").write_text("store: {}\nsources: []\n")
    with pytest.raises(ConfigError) as err:
        load_store_config(tmp_path / "blackbox.yaml")
    assert sorted(i.path for i in err.value.issues) == ["gateway", "site"]
