"""Human review of flags: the library (provenance, effective flags, surviving clean --apply) and the HTTP face
(the only writes of the service: same-origin JSON only, the token beyond loopback, beside a running build).

Each test works on its own copy of the shared small index (tests/serving.py: random weights, block5_pool)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
import pytest

import imgidx
from imgidx import ops
from imgidx.indexer.store import Store

from .serving import RANDOM, make_photos

pytestmark = pytest.mark.slow  # builds a small index once per session (Keras)


@pytest.fixture
def home(served_index, tmp_path):
    copy = tmp_path / "home"
    shutil.copytree(served_index.home, copy)
    return copy


def ids_of(home, name):
    with Store(home, readonly=True) as store:
        return store.vector_ids(name)


def test_a_review_is_stored_with_its_provenance_and_undo_withdraws_it(home):
    idx = imgidx.open(home)
    pid = ids_of(home, "stripes")[0]
    before = time.time()
    first = idx.review("stripes", pid, "flag", reviewer="alice", source="duplicates")
    assert (first.decision, first.reviewer, first.source, first.automatic) == ("flag", "alice", "duplicates", False)
    assert before <= first.created_at <= time.time()
    second = idx.review("stripes", pid, "keep", reviewer="bob", source="audit")
    assert [r.reviewer for r in idx.reviews("stripes")] == ["bob"]  # the newest decision counts
    assert [r.decision for r in idx.reviews("stripes", history=True)] == ["flag", "keep"]
    assert second.decision == "keep"
    assert idx.undo_review("stripes", pid).reviewer == "alice"  # back to the one before
    assert idx.undo_review("stripes", pid) is None  # back to the automatic flag
    assert idx.reviews("stripes") == []


def test_a_review_is_refused_for_what_is_not_a_decision_on_a_membership(home):
    idx = imgidx.open(home)
    stripe, ring = ids_of(home, "stripes")[0], ids_of(home, "rings")[0]
    with pytest.raises(imgidx.NotFound):
        idx.review("rings", stripe, "flag")  # not a member there
    with pytest.raises(imgidx.NotFound):
        idx.review("nope", ring, "flag")
    for bad in ({"decision": "maybe"}, {"source": "elsewhere"}, {"reviewer": ""}, {"reviewer": "x" * 101}):
        kw = {"decision": "flag", "reviewer": "a", "source": "clean", **bad}
        with pytest.raises(imgidx.InvalidArgument):
            idx.review("rings", ring, kw.pop("decision"), **kw)


def test_decisions_survive_clean_apply_and_undo_and_count_everywhere(home):
    idx = imgidx.open(home)
    report = idx.clean("stripes", drop=2, method="centroid", apply=True)
    auto = [r.id for r in report.flagged]
    kept_auto = [r.id for r in report.rows if not r.flagged]
    assert len(auto) == 2
    overruled, accepted = auto[0], kept_auto[0]
    idx.review("stripes", overruled, "keep", reviewer="alice")
    idx.review("stripes", accepted, "flag", reviewer="alice")

    def clean_members():
        with Store(home, readonly=True) as store:
            return set(store.vector_ids("stripes", include_flagged=False))

    expected = set(ids_of(home, "stripes")) - {auto[1], accepted}
    assert clean_members() == expected
    # a later clean --apply flags the same photos again: the person's decisions still count
    idx.clean("stripes", drop=2, method="centroid", apply=True)
    assert clean_members() == expected
    assert idx.undo_clean("stripes") > 0  # removes the automatic flags, not the reviews
    assert clean_members() == set(ids_of(home, "stripes")) - {accepted}
    assert [r.photo_id for r in idx.reviews("stripes")] == [overruled, accepted]
    # effective flags in similar --in, the counts, the photo's record and training
    hits = idx.similar(id=accepted, k=50, collection="stripes")
    assert accepted not in {h.id for h in hits} and overruled in {h.id for h in hits}
    assert accepted in {h.id for h in idx.similar(id=accepted, k=50, collection="stripes", include_flagged=True)}
    info = idx.info()
    assert info.clean["stripes"] == info.collections["stripes"] - 1
    assert "stripes" in idx.photo(accepted).flagged_in
    with Store(home, readonly=True) as store:
        ids, labels = ops.labelled_ids(store, ["stripes", "rings"])
    assert accepted not in ids and overruled in ids
    report = idx.train("t", ["stripes", "rings"], test_size=0.3)
    assert report.n_train + report.n_test == len(ids)


def test_an_older_store_is_upgraded_when_opened(home):
    import sqlite3

    with Store(home, readonly=True) as store:
        ids = store.vector_ids()
        before = store.vectors(ids)
    db = sqlite3.connect(home / "imgidx.sqlite")  # back to version 1: no reviews, float32 BLOBs in SQLite
    db.executescript(
        "BEGIN; DROP TABLE reviews; DROP TABLE vectors; DELETE FROM meta WHERE key='vector_dtype';"
        "CREATE TABLE vectors (photo_id INTEGER PRIMARY KEY REFERENCES photos (id), vec BLOB NOT NULL);"
        "UPDATE meta SET value='1' WHERE key='schema_version'; COMMIT;"
    )
    with db:
        rows = [(i, v.tobytes()) for i, v in zip(ids, before, strict=True)]
        db.executemany("INSERT INTO vectors VALUES (?, ?)", rows)
    db.close()
    (home / "vectors.bin").unlink()
    assert imgidx.open(home).reviews("stripes") == []  # a reader upgrades it once
    with Store(home, readonly=True) as store:
        assert store.meta("schema_version") == "3" and store.vector_dtype == "float32"
        assert store.vectors(ids).tobytes() == before.tobytes()


# ---- HTTP ---------------------------------------------------------------------------------------------------------
def post(client, body, **headers):
    return client.post("/reviews", json=body, headers=headers)


def test_reviews_over_http_and_the_cross_site_guard(served_index, home):
    from imgidx.service.server import spawned

    pid = ids_of(home, "rings")[0]
    body = {"collection": "rings", "id": pid, "decision": "keep", "source": "audit", "reviewer": "carol"}
    with spawned(home, env=served_index.env) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        own = server.url.rstrip("/")
        r = post(c, body, origin=own, **{"sec-fetch-site": "same-origin"})
        assert r.status_code == 200, r.text
        assert r.json()["review"]["reviewer"] == "carol" and r.json()["flagged"] is False
        # another site's page: refused whatever it sends
        assert post(c, body, origin="http://evil.example").status_code == 403
        assert post(c, body, origin="null").status_code == 403
        assert post(c, body, **{"sec-fetch-site": "cross-site"}).status_code == 403
        assert post(c, body, **{"sec-fetch-site": "same-site"}).status_code == 403
        # two Origin headers, the first one ours: neither is trusted
        twice = c.post("/reviews", json=body, headers=[("origin", own), ("origin", "http://evil.example")])
        assert twice.status_code == 403 and "more than one Origin" in twice.json()["detail"]
        # a plain HTML form (no CORS preflight) cannot send JSON: refused
        form = c.post("/reviews", data={k: str(v) for k, v in body.items()})
        assert form.status_code == 415
        text = c.post("/reviews", content=b'{"collection": "rings"}', headers={"content-type": "text/plain"})
        assert text.status_code == 415
        # DNS rebinding: a non-loopback Host is refused before anything else
        assert post(c, body, host="evil.example").status_code == 403
        assert post(c, {**body, "decision": "maybe"}).status_code == 400
        assert post(c, {**body, "id": 10**6}).status_code == 404
        answer = c.get("/collections/rings/reviews").json()
        assert [(x["photo_id"], x["decision"], x["source"]) for x in answer["reviews"]] == [(pid, "keep", "audit")]
        undone = c.post("/reviews/undo", json={"collection": "rings", "id": pid})
        assert undone.status_code == 200 and undone.json()["review"] is None
        assert c.get("/collections/rings/reviews").json()["reviews"] == []
        # the review queue, and the clean ranking re-judged with the decisions (issue 20)
        queue = c.get("/collections/rings/next", params={"n": 3}).json()
        assert queue["reviewed"] == 0 and len(queue["photos"]) == 3
        assert {"id", "source_id", "title", "reason", "p_flag", "flagged"} <= set(queue["photos"][0])
        first = queue["photos"][0]["id"]
        assert post(c, {"collection": "rings", "id": first, "decision": "flag"}).status_code == 200
        assert first not in [p["id"] for p in c.get("/collections/rings/next").json()["photos"]]
        clean = c.get("/collections/rings/clean").json()
        item = next(i for i in clean["items"] if i["id"] == first)
        assert clean["reviews"] == 1 and item["outlier"] and item["reviewed"] == "flag"
        assert item["reason"] == "flagged by anonymous" and all(i["p_flag"] is not None for i in clean["items"])
        assert c.get("/collections/rings/next", params={"n": 0}).status_code == 422
        assert c.get("/collections/nope/next").status_code == 404
        assert c.get("/collections/stripes/duplicates").status_code == 200
        audit = c.get("/collections/stripes/audit")
        assert audit.status_code == 200 and audit.json()["against"] == ["rings"]


def test_with_a_token_writes_need_it_and_the_reviewer_is_the_token(served_index, home):
    from imgidx.service.server import spawned

    pid = ids_of(home, "rings")[0]
    body = {"collection": "rings", "id": pid, "decision": "flag", "reviewer": "mallory"}
    env = {**served_index.env, "IMGIDX_TOKEN": "s3cret-token"}
    with spawned(home, env=env) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        for path in ("/reviews", "/reviews/undo"):
            assert c.post(path, json=body).status_code == 401
        assert c.get("/collections/rings/reviews").status_code == 401
        auth = {"authorization": "Bearer s3cret-token"}
        # the token first, the cross-site rule too
        assert post(c, body, origin="http://evil.example", **auth).status_code == 403
        r = post(c, body, **auth)
        assert r.status_code == 200 and r.json()["review"]["reviewer"] == "token"
    assert imgidx.open(home).reviews("rings")[0].reviewer == "token"


@pytest.mark.long  # a build in a subprocess: make test-long (CI runs it)
def test_reviews_posted_while_a_build_runs_keep_the_store_consistent(served_index, home, tmp_path):
    from imgidx.service.server import spawned

    more = make_photos(tmp_path / "more")  # the same pictures elsewhere: new photos for the build
    pids = ids_of(home, "stripes")
    cmd = [sys.executable, "-m", "imgidx", "--home", str(home), "build", "--from-dir", str(more), *RANDOM]
    with spawned(home, env=served_index.env) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        build = subprocess.Popen(cmd, env=served_index.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        posted = 0
        try:
            while build.poll() is None or posted < 4:
                pid = pids[posted % len(pids)]
                decision = "flag" if posted % 2 else "keep"
                r = post(c, {"collection": "stripes", "id": pid, "decision": decision, "reviewer": "dana"})
                assert r.status_code == 200, r.text
                posted += 1
                time.sleep(0.05)
        finally:
            _, err = build.communicate(timeout=600)
        assert build.returncode == 0, err
    idx = imgidx.open(home)
    assert len(idx.reviews("stripes", history=True)) == posted
    assert idx.verify().ok
    assert idx.info().collections["stripes"] == 2 * len(pids)


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"origin": "http://127.0.0.1:8000"}, False),
        ({"origin": "https://127.0.0.1:8000"}, False),  # a TLS proxy in front: same host and port
        ({"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1:8000"}, False),
        ({}, False),  # curl or a script: the token / loopback rule decides
        ({"origin": "http://127.0.0.1:8001"}, True),  # another local server's page
        ({"origin": "null"}, True),  # a sandboxed frame or a file:// page
        ({"origin": "http://evil.example"}, True),
        ({"sec-fetch-site": "same-site"}, True),
        ({"sec-fetch-site": "cross-site", "origin": "http://127.0.0.1:8000"}, True),
    ],
)
def test_the_cross_site_rule(headers, refused):
    from starlette.datastructures import Headers

    from imgidx.service.guard import cross_site

    assert bool(cross_site(Headers({"host": "127.0.0.1:8000", **headers}))) is refused


@pytest.mark.parametrize(
    "raw",
    [
        [("origin", "http://127.0.0.1:8000"), ("origin", "http://evil.example")],
        [("origin", "http://127.0.0.1:8000"), ("origin", "http://127.0.0.1:8000")],
        [("sec-fetch-site", "same-origin"), ("sec-fetch-site", "cross-site")],
        [("origin", "http://127.0.0.1:8000"), ("host", "evil.example")],
    ],
)
def test_a_repeated_origin_header_is_refused(raw):
    """Which copy a proxy or a framework reads differs: a request that says two things is not same-origin."""
    from starlette.datastructures import Headers

    from imgidx.service.guard import cross_site

    headers = Headers(raw=[(b"host", b"127.0.0.1:8000")] + [(k.encode(), v.encode()) for k, v in raw])
    assert cross_site(headers).startswith("more than one ")
