"""Every endpoint of the API against every role and no credentials, on SQLite and PostgreSQL.

The table below names, per endpoint, the status each caller gets for a batch of SH-PD-01 (the
site of ``factory_qa`` and of the all-sites ``regulator``; ``regulator_other`` and ``other_qa``
see only GZ-BY-02). A test checks that the table has a row for every route of the OpenAPI
document, so a new endpoint cannot go untested. The live stream's granted cases need a real
server (the test client waits for a response's end): tests/store/test_web_browser.py runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import BATCH, REFERENCES, SITE, Store

from blackbox.web.auth import create_token

WHO = (None, "regulator", "regulator_other", "factory_qa", "other_qa", "admin")
A = f"/api/v1/sites/{SITE}/batches/{BATCH}"
TAG = "EM-01.temperature"


def statuses(regulator: int, regulator_other: int, factory_qa: int, other_qa: int, admin: int) -> dict[str | None, int]:
    return {None: 401, "regulator": regulator, "regulator_other": regulator_other, "factory_qa": factory_qa,
            "other_qa": other_qa, "admin": admin}


BATCH_DATA = statuses(200, 404, 200, 404, 403)  # another site's batch: 404, as a missing one
READERS = statuses(200, 200, 200, 200, 403)
EVERYONE = statuses(200, 200, 200, 200, 200)
REGULATORS = statuses(200, 200, 403, 403, 403)
ADMINS = statuses(403, 403, 403, 403, 200)


@dataclass(frozen=True)
class Row:
    method: str
    route: str
    expected: dict[str | None, int]
    url: Callable[[Store], str] | str = ""
    body: dict[str, Any] | None = None
    undo: Callable[[TestClient, dict[str, str]], None] | None = field(default=None, compare=False)
    """Run after a granted change, so that the module's store is as before."""


def _withdraw(c: TestClient, headers: dict[str, str]) -> None:
    assert c.delete(f"/api/v1/sites/{SITE}/golden?product=FC-050", headers=headers).status_code == 200


def _choose(c: TestClient, headers: dict[str, str]) -> None:
    assert c.post(f"/api/v1/sites/{SITE}/golden", json={"batch": REFERENCES[0]}, headers=headers).status_code == 201


def _spare_token(store: Store) -> str:
    return f"/api/v1/admin/tokens/{create_token(store.engine, 'spare', 'regulator').split('_')[1]}"


ROWS = [
    Row("GET", "/api/v1/me", EVERYONE),
    Row("GET", "/api/v1/batches", READERS),
    Row("GET", "/api/v1/sites/{site}/batches/{batch}", BATCH_DATA, A),
    *(Row("GET", f"/api/v1/sites/{{site}}/batches/{{batch}}/{t}", BATCH_DATA, f"{A}/{t}")
      for t in ("materials", "parameters", "qc", "timeline", "phases", "integrity", "tags")),
    Row("GET", "/api/v1/sites/{site}/batches/{batch}/series", BATCH_DATA, f"{A}/series?tag={TAG}"),
    Row("GET", "/api/v1/sites/{site}/batches/{batch}/compare", BATCH_DATA, f"{A}/compare?tag={TAG}&last=3"),
    Row("GET", "/api/v1/golden", EVERYONE),
    Row("GET", "/api/v1/golden/history", EVERYONE),
    Row("POST", "/api/v1/sites/{site}/golden", statuses(403, 403, 201, 404, 201), body={"batch": REFERENCES[0]},
        undo=_withdraw),
    Row("DELETE", "/api/v1/sites/{site}/golden", statuses(403, 403, 200, 404, 200),
        f"/api/v1/sites/{SITE}/golden?product=FC-050"),
    Row("GET", "/api/v1/sites/{site}/live", statuses(200, 404, 200, 404, 403)),
    Row("GET", "/api/v1/lots/{lot}", READERS, "/api/v1/lots/LOT-W-0001"),
    Row("GET", "/api/v1/genealogy/{node}", READERS, "/api/v1/genealogy/LOT-W-0001"),
    Row("GET", "/api/v1/gateways", EVERYONE),
    Row("GET", "/api/v1/access-log", REGULATORS),
    Row("GET", "/api/v1/admin/tokens", ADMINS),
    Row("POST", "/api/v1/admin/tokens", statuses(403, 403, 403, 403, 201),
        body={"name": "matrix", "role": "regulator"}),
    Row("DELETE", "/api/v1/admin/tokens/{token_id}", ADMINS, _spare_token),
]


def test_the_table_covers_every_route(web_client: TestClient) -> None:
    paths = web_client.get("/api/v1/openapi.json").json()["paths"]
    served = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert served == {(row.method, row.route) for row in ROWS}


# a granted live stream needs a real server: test_web_browser.py::test_live_stream_for_every_caller
CASES = [(row, who) for row in ROWS for who in WHO if not (row.route.endswith("/live") and row.expected[who] == 200)]


@pytest.mark.parametrize(("row", "who"), CASES,
                         ids=[f"{r.method} {r.route} {w or 'no-credentials'}" for r, w in CASES])
def test_every_route_for_every_caller(web_client: TestClient, web_store: Store, row: Row, who: str | None) -> None:
    expected = row.expected[who]
    headers = {"Authorization": f"Bearer {web_store.tokens[who]}"} if who else {}
    granted = expected < 300
    if row.method == "DELETE" and row.route.endswith("/golden") and granted:
        _choose(web_client, headers)  # something to withdraw
    url = row.url(web_store) if callable(row.url) else row.url or row.route.replace("{site}", SITE)
    r = web_client.request(row.method, url, headers=headers, json=row.body)
    assert r.status_code == expected, (who, row.method, url, r.text[:300])
    if who is None:
        assert r.headers["www-authenticate"] == "Bearer"
    if granted and row.undo is not None:
        row.undo(web_client, headers)
