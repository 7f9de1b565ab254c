"""A store with batches at two sites, principals of every role, and the web application on it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from store_synth import GATEWAY, SEC, SITE, T0, Gateway, Scenario, config_data, production_batch

from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import create_schema
from blackbox.web.app import create_app
from blackbox.web.auth import create_token, create_user

OTHER_SITE = "GZ-BY-02"
OTHER_GATEWAY = "gw-07"
BATCH = "FC050-2026-1125-01"
OTHER_BATCH = "GZ-2026-0001"
REUSED = "FC050-REUSED-1"
REFERENCES = ["FC050-2026-1101-01", "FC050-2026-1102-01", "FC050-2026-1103-01"]
PASSWORD = "correct horse battery"
HOUR = 3600 * SEC


class SiteGateway(Gateway):
    """A synthetic gateway whose config.applied names its own site (and a time zone)."""

    site_info: dict[str, Any] | None = None

    def apply_config(self, ts_us: int, data: dict[str, Any] | None = None) -> Any:
        data = dict(config_data() if data is None else data)
        data["site"] = self.site_info or {**data["site"], "timezone": "Asia/Shanghai"}
        return super().apply_config(ts_us, data)


def reference_batch(gw: Gateway, batch: str, t: int, offset: float) -> None:
    """A shorter FC-050 batch with the same phases: EM-01.temperature shifted by ``offset``."""
    gw.apply_config(t)
    gw.start_batch(batch, t + 1 * SEC)
    gw.set_phase("heat", t + 4 * SEC)
    for i in range(5):
        gw.reading("EM-01.temperature", 60.0 + i + offset, t + (5 + i) * SEC)
    gw.set_phase("emulsify", t + 20 * SEC)
    for i in range(8):
        gw.reading("EM-01.temperature", 74.0 + offset, t + (21 + i) * SEC)
    gw.set_phase("cool", t + 40 * SEC)
    for i in range(5):
        gw.reading("EM-01.temperature", 40.0 - i + offset, t + (41 + i) * SEC)
    gw.end_batch(t + 60 * SEC)
    gw.seal()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


def login(c: TestClient, user: str, password: str = PASSWORD, next_: str = "/") -> tuple[int, str | None]:
    form = c.get("/login")
    r = c.post("/login", data={"csrf": csrf_of(form.text), "username": user, "password": password, "next": next_},
               follow_redirects=False)
    return r.status_code, r.headers.get("location")


@dataclass
class Store:
    engine: Engine
    scenario: Scenario
    tokens: dict[str, str]
    """role name -> bearer token: regulator, regulator_other (only OTHER_SITE), factory_qa, other_qa, admin."""


def build_store(engine: Engine) -> Store:
    """Site SH-PD-01: three reference batches, the traced batch, a batch number used twice.
    Site GZ-BY-02: one batch, with a buffer gap (incomplete). Every principal of every role."""
    gw = SiteGateway()
    for i, (name, offset) in enumerate(zip(REFERENCES, (-1.0, 0.0, 1.0), strict=True)):
        reference_batch(gw, name, T0 - (3 - i) * HOUR, offset)
    scenario = production_batch(gw, BATCH, T0)
    reference_batch(gw, REUSED, T0 + HOUR, 0.0)
    reference_batch(gw, REUSED, T0 + 2 * HOUR, 5.0)  # the PLC restarted its counter

    other = SiteGateway(site=OTHER_SITE, gateway=OTHER_GATEWAY)
    other.site_info = {"id": OTHER_SITE, "name": "Guangzhou Baiyun Cosmetics", "licence": "粤妆20170033",
                       "line": "L2", "timezone": "Asia/Shanghai"}
    production_batch(other, OTHER_BATCH, T0 + 30 * SEC, gap=True)  # its buffer dropped records

    ing = Ingestor(engine)
    for g in (gw, other):
        ing.enroll(g.gateway, g.site, g.public_pem)
        for sealed in g.sealed:
            result = ing.handle(sealed.wire, g.site, g.gateway)
            assert result.status == "stored", result
    tokens = {
        "regulator": create_token(engine, "inspector li", "regulator"),
        "regulator_other": create_token(engine, "inspector guangzhou", "regulator", [OTHER_SITE]),
        "factory_qa": create_token(engine, "qa shanghai", "factory_qa", [SITE]),
        "other_qa": create_token(engine, "qa guangzhou", "factory_qa", [OTHER_SITE]),
        "admin": create_token(engine, "it admin", "admin"),
    }
    create_user(engine, "inspector.li", PASSWORD, "regulator")
    create_user(engine, "qa.zhang", PASSWORD, "factory_qa", [SITE])
    return Store(engine, scenario, tokens)


@contextmanager
def web_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine with the store's schema for a module-scoped fixture parametrised sqlite/postgresql."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('web')}/store.sqlite")
        create_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    url = request.getfixturevalue("pg_database")
    schema = f"w_{uuid.uuid4().hex[:12]}"
    setup = make_engine(url)
    with setup.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    create_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with setup.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        setup.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store per database kind for a whole test module (tests only add tokens and log entries)."""
    with web_engine(request, tmp_path_factory) as engine:
        yield build_store(engine)


@pytest.fixture(scope="module")
def web_client(web_store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(web_store.engine, web_store.engine)) as c:
        yield c


__all__ = ["BATCH", "GATEWAY", "OTHER_BATCH", "OTHER_SITE", "SITE", "Store", "build_store", "web_client", "web_store"]
