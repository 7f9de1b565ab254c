"""Golden batches through the API, on SQLite and PostgreSQL: who may choose, what the comparison uses
and says, the history kept, the occurrence of a reused batch number pinned.

The store is this module's own (``web_store`` is module-scoped): the choices made here change the
comparison's default only for these tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import BATCH, OTHER_BATCH, OTHER_SITE, REFERENCES, REUSED, SITE, Store, csrf_of, login

from blackbox.model import now_us
from blackbox.web.app import create_app

TAG = "EM-01.temperature"
A = f"/api/v1/sites/{SITE}/batches/{BATCH}"
SET = f"/api/v1/sites/{SITE}/golden"


def call(c: TestClient, store: Store, who: str | None, method: str, url: str, status: int, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {store.tokens[who]}"} if who else {}
    r = c.request(method, url, headers=headers, **kw)
    assert r.status_code == status, (who, method, url, r.status_code, r.text[:300])
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


def compare(c: TestClient, store: Store, query: str = "", who: str = "factory_qa") -> Any:
    return call(c, store, who, "GET", f"{A}/compare?tag={TAG}{query}", 200)


@pytest.mark.parametrize(("who", "site", "body", "status"), [
    (None, SITE, {"batch": REFERENCES[0]}, 401),
    ("regulator", SITE, {"batch": REFERENCES[0]}, 403),  # regulators look; QA chooses
    ("regulator_other", OTHER_SITE, {"batch": OTHER_BATCH}, 403),
    ("other_qa", SITE, {"batch": REFERENCES[0]}, 404),  # another site: as if it did not exist
    ("factory_qa", OTHER_SITE, {"batch": OTHER_BATCH}, 404),
    ("factory_qa", SITE, {"batch": "NO-SUCH"}, 404),
    ("factory_qa", SITE, {"batch": REUSED, "occurrence": 3}, 404),
    ("admin", SITE, {"batch": "NO-SUCH"}, 404),
    ("factory_qa", SITE, {"occurrence": 1}, 422),
])
def test_who_may_choose_a_golden_batch(web_client: TestClient, web_store: Store, who: str | None, site: str,
                                       body: dict[str, Any], status: int) -> None:
    call(web_client, web_store, who, "POST", f"/api/v1/sites/{site}/golden", status, json=body)
    call(web_client, web_store, who, "DELETE", f"/api/v1/sites/{site}/golden?product=NO-SUCH",
         401 if who is None else 403 if who.startswith("regulator") else 404)


def test_choices_through_the_api_need_a_bearer_token(web_client: TestClient, web_store: Store) -> None:
    """A session cookie alone cannot change anything through the API (the pages' forms carry a CSRF token)."""
    with TestClient(web_client.app) as c:
        login(c, "qa.zhang")
        assert c.post(SET, json={"batch": REFERENCES[0]}).status_code == 403
        assert c.delete(f"{SET}?product=FC-050").status_code == 403
        assert c.get("/api/v1/golden").status_code == 200  # reading is fine


def test_golden_batch_chosen_used_replaced_and_withdrawn(web_client: TestClient, web_store: Store) -> None:
    c, s = web_client, web_store
    before = now_us()
    first = compare(c, s, "&last=3")
    assert (first["reference_kind"], first["golden"]) == ("last", None)

    # an administrator chooses the oldest reference batch
    chosen = call(c, s, "admin", "POST", SET, 201, json={"batch": REFERENCES[0], "reason": "validated run"})
    admin_label = f"token:{s.tokens['admin'].split('_')[1]} (it admin)"
    assert (chosen["site"], chosen["product"], chosen["batch"], chosen["occurrence"]) == (
        SITE, "FC-050", REFERENCES[0], 1)
    assert (chosen["chosen_by"], chosen["role"], chosen["reason"]) == (admin_label, "admin", "validated run")
    assert chosen["chosen_at_us"] >= before
    used = compare(c, s)
    assert used["reference_kind"] == "golden" and used["golden"]["batch"] == REFERENCES[0]
    assert [r["batch"] for r in used["reference"]] == [REFERENCES[0]]

    # factory QA replaces it with the FIRST run of a reused batch number (the latest is the second)
    qa_label = f"token:{s.tokens['factory_qa'].split('_')[1]} (qa shanghai)"
    call(c, s, "factory_qa", "POST", SET, 201, json={"batch": REUSED, "occurrence": 1})
    used = compare(c, s)
    assert [(r["batch"], r["occurrence"]) for r in used["reference"]] == [(REUSED, 1)]
    assert used["golden"]["chosen_by"] == qa_label and used["golden"]["reason"] is None
    # the envelope is the golden curve (emulsify held 74 in REUSED's first run) ± k·sd of the product's
    # last batches before this one: the references, 73, 74 and 75 through emulsify (sd 1, k = 2)
    assert [(r["batch"], r["occurrence"]) for r in used["spread"]] == [(b, 1) for b in reversed(REFERENCES)]
    emul = [i for i, x in enumerate(used["x"]) if 1 <= x < 2 and used["mean"][i] is not None]
    assert emul and all(used["mean"][i] == pytest.approx(74.0) for i in emul)
    assert all((used["lower"][i], used["upper"][i]) == (pytest.approx(72.0), pytest.approx(76.0)) for i in emul)
    assert any(d["phase"] == "emulsify" for d in used["deviations"])  # 79.5..86 is far outside
    assert "peak" in used["batch"]["outside"]  # 86 against the golden 74, sd of the last peaks 1

    # the last batches and a batch named for one comparison can still be asked for; the golden is kept
    last = compare(c, s, "&reference=last&last=3")
    assert last["reference_kind"] == "last" and [r["batch"] for r in last["reference"]] == list(
        reversed(REFERENCES))
    assert last["golden"]["batch"] == REUSED
    named = compare(c, s, f"&against={REFERENCES[1]}")
    assert named["reference_kind"] == "batch" and [r["batch"] for r in named["reference"]] == [REFERENCES[1]]

    # the regulator of the site sees the choice and its history; others see nothing of this site
    current = call(c, s, "regulator", "GET", "/api/v1/golden", 200)["items"]
    assert [(g["site"], g["product"], g["batch"], g["occurrence"]) for g in current] == [(SITE, "FC-050", REUSED, 1)]
    for who in ("regulator_other", "other_qa"):
        assert call(c, s, who, "GET", "/api/v1/golden", 200)["items"] == []
        assert call(c, s, who, "GET", "/api/v1/golden/history", 200)["items"] == []
    assert call(c, s, "admin", "GET", f"/api/v1/golden?site={SITE}", 200)["items"] == current

    # withdrawn: comparisons go back to the last batches; asking for the golden one is a 404
    call(c, s, "factory_qa", "DELETE", f"{SET}?product=FC-050&reason=recipe%20v4", 200)
    assert compare(c, s, "&last=3")["reference_kind"] == "last"
    call(c, s, "factory_qa", "GET", f"{A}/compare?tag={TAG}&reference=golden", 404)
    call(c, s, "factory_qa", "DELETE", f"{SET}?product=FC-050", 404)  # nothing left to withdraw
    assert call(c, s, "regulator", "GET", "/api/v1/golden", 200)["items"] == []

    # every choice stays, newest first
    history = call(c, s, "regulator", "GET", f"/api/v1/golden/history?site={SITE}&product=FC-050", 200)["items"]
    assert [(h["batch"], h["occurrence"], h["chosen_by"], h["reason"]) for h in history
            if h["chosen_by"] in (qa_label, admin_label)] == [
        (None, None, qa_label, "recipe v4"), (REUSED, 1, qa_label, None),
        (REFERENCES[0], 1, admin_label, "validated run")]
    csv_text = call(c, s, "regulator", "GET", "/api/v1/golden/history?format=csv", 200)
    assert csv_text.lstrip("\ufeff").splitlines()[0].startswith("site,product,batch,occurrence")

    # and the access log names who chose what
    log = call(c, s, "regulator", "GET", f"/api/v1/access-log?site={SITE}&per_page=1000", 200)["items"]
    assert [(x["principal"], x["action"], x["batch"]) for x in log
            if x["action"].startswith("golden.") and x["principal"] in (qa_label, admin_label)] == [
        (qa_label, "golden.withdraw", None), (qa_label, "golden.set", REUSED), (admin_label, "golden.set",
                                                                                 REFERENCES[0])]


def test_golden_batch_through_the_pages(web_store: Store) -> None:
    """Factory QA chooses on the comparison page (the form carries the session's CSRF token), the
    comparison then says which golden batch it uses; the golden page lists it and withdraws it."""
    page = f"/sites/{SITE}/batches/{BATCH}/compare?tag={TAG}&reference=last"
    with TestClient(create_app(web_store.engine, web_store.engine)) as qa, \
            TestClient(create_app(web_store.engine, web_store.engine)) as inspector:
        login(qa, "qa.zhang")
        login(inspector, "inspector.li")
        html = qa.get(f"/sites/{SITE}/batches/{REFERENCES[1]}/compare?tag={TAG}").text
        assert 'id="set-golden"' in html
        form = {"csrf": csrf_of(html), "site": SITE, "batch": REFERENCES[1], "occurrence": "1",
                "reason": "reference run", "next": page}
        assert qa.post("/golden", data={**form, "csrf": "forged"}, follow_redirects=False).status_code == 403
        assert 'id="set-golden"' not in inspector.get(page).text  # regulators do not choose
        refused = inspector.post("/golden", data={**form, "csrf": csrf_of(inspector.get(page).text)},
                                 follow_redirects=False)
        assert refused.status_code == 403
        done = qa.post("/golden", data=form, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == page

        auto = inspector.get(f"/sites/{SITE}/batches/{BATCH}/compare?tag={TAG}&lang=en").text
        assert 'data-kind="golden"' in auto
        assert f"the golden batch of product FC-050, {REFERENCES[1]} (occurrence 1), chosen by user:qa.zhang" in auto
        assert "reference run" in auto
        listed = inspector.get(f"/golden?site={SITE}").text
        assert f'data-site="{SITE}" data-product="FC-050"' in listed and "/golden/withdraw" not in listed

        golden_page = qa.get("/golden").text
        withdraw = {"csrf": csrf_of(golden_page), "site": SITE, "product": "FC-050", "reason": "done"}
        assert qa.post("/golden/withdraw", data=withdraw, follow_redirects=False).status_code == 303
        after = inspector.get(f"/sites/{SITE}/batches/{BATCH}/compare?tag={TAG}&lang=en").text
        assert 'data-kind="last"' in after and "No golden batch is chosen for this product." in after
        history = inspector.get(f"/golden?site={SITE}&product=FC-050").text
        assert history.count("user:qa.zhang (factory_qa)") >= 2  # the choice and its withdrawal
