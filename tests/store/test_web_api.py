"""The web window's HTTP API: every endpoint for every role, on SQLite files and on PostgreSQL.

Expected figures are the synthetic batches' own numbers (store_synth.production_batch and
web_support), written out by hand, never recomputed with the code under test.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from store_synth import SEC, T0
from stored import rewrite_readings
from web_support import (
    BATCH,
    GATEWAY,
    HOUR,
    OTHER_BATCH,
    OTHER_SITE,
    REFERENCES,
    REUSED,
    SITE,
    Store,
    build_store,
)

from blackbox.config import WebConfig
from blackbox.model import now_us
from blackbox.web.app import create_app
from blackbox.web.auth import create_token, revoke_token
from blackbox.web.queries import occurrence_at

A = f"/api/v1/sites/{SITE}/batches/{BATCH}"
B = f"/api/v1/sites/{OTHER_SITE}/batches/{OTHER_BATCH}"
TAG = "EM-01.temperature"

BATCH_ENDPOINTS = ["", "/materials", "/parameters", "/qc", "/timeline", "/phases", "/integrity", "/tags",
                   f"/series?tag={TAG}", f"/compare?tag={TAG}"]
ALL_GETS = [*(A + e for e in BATCH_ENDPOINTS), "/api/v1/me", "/api/v1/batches", "/api/v1/lots/LOT-W-0001",
            "/api/v1/genealogy/LOT-W-0001",
            "/api/v1/gateways", "/api/v1/access-log", "/api/v1/admin/tokens", f"/api/v1/sites/{SITE}/live"]


def auth(web_store: Store, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {web_store.tokens[who]}"}


def get(web_client: TestClient, web_store: Store, who: str, url: str, status: int = 200) -> Any:
    r = web_client.get(url, headers=auth(web_store, who))
    assert r.status_code == status, (url, r.status_code, r.text[:300])
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ALL_GETS)
def test_no_credentials_is_401(web_client: TestClient, url: str) -> None:
    r = web_client.get(url)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", [
    "Bearer bbx_000000000000_wrongsecret",  # unknown id
    "Bearer not-a-token",
    "Basic dXNlcjpwYXNz",  # another scheme
    "Bearer ",
])
def test_bad_credentials_are_401(web_client: TestClient, header: str) -> None:
    assert web_client.get(A, headers={"Authorization": header}).status_code == 401


def test_a_token_with_a_wrong_secret_or_revoked_is_401(web_client: TestClient, web_store: Store) -> None:
    token = web_store.tokens["regulator"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert web_client.get(A, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    fresh = create_token(web_store.engine, "temp", "regulator")
    assert web_client.get(A, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert revoke_token(web_store.engine, fresh.split("_")[1])
    assert web_client.get(A, headers={"Authorization": f"Bearer {fresh}"}).status_code == 401


def test_tokens_are_stored_hashed(web_store: Store) -> None:
    with web_store.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM api_tokens") for v in row)
    for token in web_store.tokens.values():
        secret = token.split("_", 2)[2]  # bbx_<id>_<secret>; the secret may hold "_" itself
        assert secret not in stored


# -- authorisation by site ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", BATCH_ENDPOINTS)
def test_factory_qa_sees_its_site_and_gets_404_for_another(
    web_client: TestClient, web_store: Store, endpoint: str
) -> None:
    get(web_client, web_store, "factory_qa", A + endpoint)
    other = get(web_client, web_store, "factory_qa", B + endpoint.replace(TAG, TAG), 404)
    missing = get(web_client, web_store, "factory_qa", f"/api/v1/sites/{SITE}/batches/NO-SUCH{endpoint}", 404)
    assert other == missing  # no existence leak: the same answer for another site's and a missing batch
    get(web_client, web_store, "other_qa", B + endpoint)
    get(web_client, web_store, "other_qa", A + endpoint, 404)


@pytest.mark.parametrize("endpoint", BATCH_ENDPOINTS)
def test_regulators_see_every_site_or_their_listed_ones(
    web_client: TestClient, web_store: Store, endpoint: str
) -> None:
    get(web_client, web_store, "regulator", A + endpoint)
    get(web_client, web_store, "regulator", B + endpoint)
    get(web_client, web_store, "regulator_other", B + endpoint)
    get(web_client, web_store, "regulator_other", A + endpoint, 404)


@pytest.mark.parametrize("endpoint", BATCH_ENDPOINTS)
def test_admin_has_no_batch_data(web_client: TestClient, web_store: Store, endpoint: str) -> None:
    get(web_client, web_store, "admin", A + endpoint, 403)


def test_search_only_lists_visible_sites(web_client: TestClient, web_store: Store) -> None:
    def listed(who: str, query: str = "") -> set[tuple[str, str, int]]:
        body = get(web_client, web_store, who, "/api/v1/batches" + query)
        return {(i["site"], i["batch"], i["occurrence"]) for i in body["items"]}

    own = {(SITE, b, 1) for b in [*REFERENCES, BATCH, REUSED]} | {(SITE, REUSED, 2)}
    assert listed("factory_qa") == own
    assert listed("regulator") == own | {(OTHER_SITE, OTHER_BATCH, 1)}
    assert listed("regulator_other") == {(OTHER_SITE, OTHER_BATCH, 1)}
    assert listed("factory_qa", f"?site={OTHER_SITE}") == set()
    get(web_client, web_store, "admin", "/api/v1/batches", 403)


def test_search_filters(web_client: TestClient, web_store: Store) -> None:
    def batches(query: str) -> list[str]:
        return [i["batch"] for i in get(web_client, web_store, "regulator", "/api/v1/batches" + query)["items"]]

    assert set(batches(f"?site={SITE}&with_alarms=true")) == {BATCH}
    assert set(batches("?with_alarms=true")) == {BATCH, OTHER_BATCH}
    assert batches("?batch=1102") == [REFERENCES[1]]
    assert batches("?product=NO-SUCH") == []
    assert set(batches(f"?from_us={T0}&to_us={T0 + SEC}&site={SITE}")) == {BATCH}
    assert batches(f"?site={SITE}&with_gaps=true") == []
    assert batches("?with_gaps=true") == [OTHER_BATCH]  # its gateway recorded a buffer gap
    body = get(web_client, web_store, "regulator", "/api/v1/batches?per_page=2&page=2")
    assert body["total"] == 6 and len({i["batch"] for i in body["items"]}) == 2  # total counts batch numbers
    csv_rows = list(csv.DictReader(io.StringIO(get(web_client, web_store, "regulator", "/api/v1/batches?format=csv")
                                               .lstrip("\ufeff"))))
    assert {r["batch"] for r in csv_rows} == {*REFERENCES, BATCH, REUSED, OTHER_BATCH}


# -- the queries -------------------------------------------------------------------------------


def test_report_genealogy_qc_and_integrity(web_client: TestClient, web_store: Store) -> None:
    body = get(web_client, web_store, "factory_qa", A)
    report = body["report"]
    assert report["integrity"]["verdict"] == "verified"
    assert report["batch"]["product"] == "FC-050"
    mats = get(web_client, web_store, "factory_qa", A + "/materials")["items"]
    assert [(m["lot"], m["target"], m["actual"], m["in_tolerance"]) for m in mats] == [
        ("LOT-W-0001", 361.5, 361.2, True), ("LOT-N-7", 20.0, 20.1, False)]
    qc = get(web_client, web_store, "factory_qa", A + "/qc")["items"]
    assert [(q["test"], q["value"], q["passed"]) for q in qc] == [("pH", 6.1, True), ("viscosity", 16500.0, False)]
    integ = get(web_client, web_store, "factory_qa", A + "/integrity")
    assert integ["verdict"] == "verified" and integ["rejections"] == [{"gateway": GATEWAY, "rejections": 0}]
    assert len(integ["config_versions"]) == 2  # the cool phase's limits changed mid-batch


def test_parameters_and_timeline(web_client: TestClient, web_store: Store) -> None:
    params = get(web_client, web_store, "regulator", A + "/parameters")["items"]
    emul = next(p for p in params if p["tag"] == TAG and p["phase"] == "emulsify")
    assert (emul["min"], emul["max"], emul["l"], emul["h"], emul["hh"]) == (72.0, 86.0, 71.0, 79.0, 85.0)
    assert (emul["n_outside"], emul["n_outside_hh_ll"], emul["n_bad_quality"]) == (4, 1, 1)
    timeline = get(web_client, web_store, "regulator", A + "/timeline")["items"]
    alarms = [(r["what"], r["who"]) for r in timeline if r["kind"] == "alarm"]
    assert alarms == [("raised", None), ("acknowledged", "wang.fang"), ("cleared", None)]
    kinds = [r["kind"] for r in timeline]
    assert kinds[0] == "batch" and kinds[-1] == "batch" and "weighing" in kinds and "qc" in kinds
    assert [r["ts_us"] for r in timeline] == sorted(r["ts_us"] for r in timeline)


def test_csv_exports(web_client: TestClient, web_store: Store) -> None:
    for table, key, expected in [("materials", "lot", ["LOT-W-0001", "LOT-N-7"]),
                                 ("qc", "test", ["pH", "viscosity"])]:
        r = web_client.get(f"{A}/{table}?format=csv", headers=auth(web_store, "factory_qa"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
        assert [row[key] for row in rows] == expected


def test_series_at_full_resolution(web_client: TestClient, web_store: Store) -> None:
    s = get(web_client, web_store, "factory_qa", A + f"/series?tag={TAG}")
    # heat 60..64, emulsify (the bad reading left out), cool before and after the config change
    expected = [60.0, 61.0, 62.0, 63.0, 64.0, 72.0, 75.5, 79.5, 80.0, 86.0, 82.0, 78.0, 74.0, 50.0, 44.0, 42.0,
                41.0, 39.0]
    assert s["n_readings"] == 18 and not s["downsampled"]
    assert s["min"] == expected and s["max"] == expected
    assert [(x["l"], x["h"], x["hh"]) for x in s["limits"]] == [
        (None, 90.0, None), (71.0, 79.0, 85.0), (None, 45.0, None), (None, 40.0, None)]
    assert s["limits"][3]["start_us"] == T0 + 45 * SEC  # the new configuration, mid-phase
    assert [p["phase"] for p in s["phases"]] == ["heat", "emulsify", "cool"]
    assert [(a["transition"], a["ts_us"]) for a in s["alarms"]] == [
        ("raised", T0 + 23 * SEC), ("acknowledged", T0 + 26 * SEC), ("cleared", T0 + 31 * SEC)]
    assert [(e["level"], e["start_us"], e["end_us"]) for e in s["excursions"]] == [
        ("HH", T0 + 23 * SEC, T0 + 26 * SEC), ("H", T0 + 41 * SEC, T0 + 41 * SEC),
        ("H", T0 + 46 * SEC, T0 + 46 * SEC)]
    window = f"&from_us={T0 + 21 * SEC}&to_us={T0 + 25 * SEC}"
    zoom = get(web_client, web_store, "factory_qa", A + f"/series?tag={TAG}{window}")
    assert zoom["max"] == [72.0, 75.5, 79.5, 80.0, 86.0]


def test_series_downsampling_keeps_minima_and_maxima(web_client: TestClient, web_store: Store) -> None:
    s = get(web_client, web_store, "factory_qa", A + f"/series?tag={TAG}&points=10")
    assert s["downsampled"] and len(s["t"]) <= 10
    assert max(s["max"]) == 86.0 and min(s["min"]) == 39.0  # the spike and the minimum survive


def test_comparison_with_the_last_batches_and_a_named_one(web_client: TestClient, web_store: Store) -> None:
    c = get(web_client, web_store, "factory_qa", A + f"/compare?tag={TAG}&last=3")
    assert c["reference_kind"] == "last" and c["golden"] is None  # no golden batch chosen in this store
    assert [r["batch"] for r in c["reference"]] == list(reversed(REFERENCES))
    assert c["phases"] == ["heat", "emulsify", "cool"]
    # references hold 74 - 1, 74, 74 + 1 through emulsify: mean 74, sd 1, envelope 72..76 (k = 2)
    emul = [i for i, x in enumerate(c["x"]) if 1 <= x < 2 and c["mean"][i] is not None]
    assert emul and all(c["mean"][i] == pytest.approx(74.0) for i in emul)
    assert all(c["lower"][i] == pytest.approx(72.0) and c["upper"][i] == pytest.approx(76.0) for i in emul)
    assert any(d["phase"] == "emulsify" for d in c["deviations"])  # 79.5..86 is far outside
    assert c["batch"]["peak"] == 86.0 and "peak" in c["batch"]["outside"]
    assert c["batch"]["durations_s"] == {"heat": 16.0, "emulsify": 20.0, "cool": 20.0}
    named = get(web_client, web_store, "factory_qa", A + f"/compare?tag={TAG}&against={REFERENCES[0]}")
    assert [r["batch"] for r in named["reference"]] == [REFERENCES[0]] and named["reference_kind"] == "batch"
    get(web_client, web_store, "factory_qa", A + f"/compare?tag={TAG}&against={OTHER_BATCH}", 404)


def test_a_reused_batch_number_is_two_occurrences(web_client: TestClient, web_store: Store) -> None:
    url = f"/api/v1/sites/{SITE}/batches/{REUSED}"
    first = get(web_client, web_store, "regulator", url + "?occurrence=1")
    second = get(web_client, web_store, "regulator", url + "?occurrence=2")
    latest = get(web_client, web_store, "regulator", url)
    assert (first["occurrence"]["n_occurrences"], second["occurrence"]["occurrence"]) == (2, 2)
    assert latest["occurrence"]["occurrence"] == 2
    s1 = get(web_client, web_store, "regulator", url + f"/series?tag={TAG}&occurrence=1")
    s2 = get(web_client, web_store, "regulator", url + f"/series?tag={TAG}&occurrence=2")
    assert s1["n_readings"] == s2["n_readings"] == 18  # each its own, never 36
    assert s2["max"][0] - s1["max"][0] == 5.0
    params = get(web_client, web_store, "regulator", url + "/parameters?occurrence=1")["items"]
    p1 = {(p["phase"], p["n"]) for p in params}
    assert p1 == {("heat", 5), ("emulsify", 8), ("cool", 5)}
    assert first["report"]["batch"]["started_at_us"] != second["report"]["batch"]["started_at_us"]
    assert first["report"]["integrity"]["verdict"] == second["report"]["integrity"]["verdict"] == "verified"
    get(web_client, web_store, "regulator", url + "?occurrence=3", 404)


def test_reverse_lot(web_client: TestClient, web_store: Store) -> None:
    both = get(web_client, web_store, "regulator", "/api/v1/lots/LOT-W-0001")["items"]
    assert {(u["site"], u["batch"], u["occurrence"]) for u in both} == {(SITE, BATCH, 1), (OTHER_SITE, OTHER_BATCH, 1)}
    own = get(web_client, web_store, "factory_qa", "/api/v1/lots/LOT-W-0001")["items"]
    assert {(u["site"], u["batch"]) for u in own} == {(SITE, BATCH)}
    assert get(web_client, web_store, "factory_qa", "/api/v1/lots/NO-SUCH")["items"] == []


def test_genealogy_is_authorised_by_site(web_client: TestClient, web_store: Store) -> None:
    def batches(who: str, node: str, direction: str = "forward") -> set[str]:
        found = get(web_client, web_store, who, f"/api/v1/genealogy/{node}?direction={direction}")
        return {n["id"] for n in found["nodes"] if n["kind"] == "batch"}

    assert batches("regulator", "LOT-W-0001") == {BATCH, OTHER_BATCH}
    assert batches("factory_qa", "LOT-W-0001") == {BATCH}
    assert batches("factory_qa", OTHER_BATCH, "reverse") == set()  # another site's batch: nothing, not even its id
    assert batches("regulator", OTHER_BATCH, "reverse") == {OTHER_BATCH}


def test_gateways_by_role(web_client: TestClient, web_store: Store) -> None:
    def sites(who: str) -> list[str]:
        return [g["site"] for g in get(web_client, web_store, who, "/api/v1/gateways")["items"]]

    assert sorted(sites("admin")) == sorted(sites("regulator")) == sorted([SITE, OTHER_SITE])
    assert sites("factory_qa") == [SITE]


def test_every_batch_access_is_recorded_and_listed_for_regulators(web_client: TestClient, web_store: Store) -> None:
    token = create_token(web_store.engine, "auditor", "factory_qa", [SITE])
    label = f"token:{token.split('_')[1]} (auditor)"
    headers = {"Authorization": f"Bearer {token}"}
    before = now_us()
    assert web_client.get(A + "/materials", headers=headers).status_code == 200
    assert web_client.get(B, headers=headers).status_code == 404  # refused: not a read of the batch

    def entries(who: str, query: str) -> list[dict[str, Any]]:
        items = get(web_client, web_store, who, f"/api/v1/access-log?per_page=1000&{query}")["items"]
        return [x for x in items if x["principal"] == label]

    log = entries("regulator", f"batch={BATCH}")
    assert [(x["role"], x["action"], x["site"], x["batch"], x["detail"]) for x in log] == [
        ("factory_qa", "batch.materials", SITE, BATCH, "occurrence 1")]
    assert log[0]["at_us"] >= before
    assert entries("regulator", f"batch={OTHER_BATCH}") == []
    assert entries("regulator_other", "") == []  # a regulator of the other site does not see it
    csv_text = get(web_client, web_store, "regulator", f"/api/v1/access-log?batch={BATCH}&format=csv&per_page=1000")
    assert label in csv_text
    get(web_client, web_store, "factory_qa", "/api/v1/access-log", 403)
    get(web_client, web_store, "admin", "/api/v1/access-log", 403)


def test_admin_manages_tokens(web_client: TestClient, web_store: Store) -> None:
    r = web_client.post("/api/v1/admin/tokens", json={"name": "lims", "role": "factory_qa", "sites": [SITE]},
                    headers=auth(web_store, "admin"))
    assert r.status_code == 201
    token = r.json()["token"]
    assert web_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json() == {
        "principal": f"token:{token.split('_')[1]} (lims)", "role": "factory_qa", "sites": [SITE]}
    listed = get(web_client, web_store, "admin", "/api/v1/admin/tokens")["items"]
    assert "lims" in [t["name"] for t in listed] and all("secret" not in str(t) for t in listed)
    admin = auth(web_store, "admin")
    bad = web_client.post("/api/v1/admin/tokens", json={"name": "x", "role": "factory_qa"}, headers=admin)
    assert bad.status_code == 422  # factory QA needs exactly one site
    assert web_client.delete(f"/api/v1/admin/tokens/{token.split('_')[1]}", headers=admin).status_code == 200
    assert web_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    for who in ("regulator", "factory_qa"):
        get(web_client, web_store, who, "/api/v1/admin/tokens", 403)


def test_openapi_document_lists_the_endpoints(web_client: TestClient) -> None:
    paths = web_client.get("/api/v1/openapi.json").json()["paths"]
    for p in ["/api/v1/batches", "/api/v1/sites/{site}/batches/{batch}/series", "/api/v1/lots/{lot}",
              "/api/v1/access-log", "/api/v1/sites/{site}/batches/{batch}/compare"]:
        assert p in paths


def test_live_stream_is_authorised_by_site(web_client: TestClient, web_store: Store) -> None:
    # refusals come before the stream opens; the stream itself is tested in the browser tests
    get(web_client, web_store, "factory_qa", f"/api/v1/sites/{OTHER_SITE}/live", 404)
    get(web_client, web_store, "regulator_other", f"/api/v1/sites/{SITE}/live", 404)
    get(web_client, web_store, "admin", f"/api/v1/sites/{SITE}/live", 403)


def test_an_edit_of_stored_rows_shows_in_the_verdict(engine: Engine) -> None:
    """A hostile DBA edits a reading after a regulator looked: the next report says failed.

    Reports are cached only in the web process's memory and for at most report_cache_s (0 here).
    """
    built = build_store(engine)
    headers = {"Authorization": f"Bearer {built.tokens['regulator']}"}
    with TestClient(create_app(engine, engine, WebConfig(report_cache_s=0))) as c:
        assert c.get(A, headers=headers).json()["report"]["integrity"]["verdict"] == "verified"
        with engine.begin() as conn:
            assert rewrite_readings(conn, lambda r: r._replace(num=84.0) if (r.batch, r.num) == (BATCH, 86.0) else r)
        after = c.get(A, headers=headers).json()["report"]["integrity"]
        assert after["verdict"] == "failed"
        assert any(f["severity"] == "failed" for f in after["findings"])
        series = c.get(A + f"/series?tag={TAG}", headers=headers).json()
        assert 86.0 not in series["max"]  # the chart shows what is stored; the verdict says it was altered


@pytest.mark.parametrize(("url", "total"), [("/api/v1/lots/LOT-W-0001", 2), ("/api/v1/gateways", 2)])
def test_lists_are_paginated(web_client: TestClient, web_store: Store, url: str, total: int) -> None:
    """(The batch search pages batch numbers: tested with its filters.)"""
    sep = "?"
    pages = [get(web_client, web_store, "regulator", f"{url}{sep}per_page=1&page={n}") for n in (1, 2)]
    assert [(p["total"], p["page"], p["per_page"], len(p["items"])) for p in pages] == [(total, 1, 1, 1),
                                                                                     (total, 2, 1, 1)]
    assert pages[0]["items"] != pages[1]["items"]
    beyond = get(web_client, web_store, "regulator", f"{url}{sep}per_page=1&page={total + 1}")
    assert beyond["items"] == []


@pytest.mark.parametrize(("ts_us", "expected"), [
    (T0 + HOUR, None),  # before the first run started
    (T0 + HOUR + 30 * SEC, 1), (T0 + 2 * HOUR, 1),  # during the first run, and after it ended
    (T0 + 2 * HOUR + 30 * SEC, 2),  # the PLC restarted its counter: the second run
])
def test_a_lot_use_names_the_run_of_a_reused_batch_number(web_store: Store, ts_us: int, expected: int | None) -> None:
    """A lot consumed by a reused batch number links to the run that consumed it (reference_batch starts
    each run one second after its hour)."""
    assert occurrence_at(web_store.engine, SITE, REUSED, ts_us) == expected
