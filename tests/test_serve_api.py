"""`imgidx serve` over HTTP: real uvicorn processes on loopback ports, a real index (random weights), httpx."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.service.server import spawned

from .conftest import jpeg_bytes, pattern_image
from .serving import FAMILIES, build

pytestmark = pytest.mark.slow  # the server loads the VGG16 graph
N_PHOTOS = sum(FAMILIES.values()) + 1
HIT_KEYS = {"id", "source_id", "score", "collections", "title", "owner", "license", "page_url", "image_url"}


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def upload(client, data: bytes, path="/similar", name="q.jpg", **params):
    return client.post(path, params=params, files={"file": (name, data, "image/jpeg")})


def metric(client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_uploaded_photo_finds_itself_first_with_attribution(client, served_index):
    data = (served_index.photos / "rings" / "rings_2.jpg").read_bytes()
    r = upload(client, data, k=4)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 4 and hits[0]["source_id"] == "rings/rings_2.jpg" and hits[0]["score"] >= 0.999
    assert set(hits[0]) == HIT_KEYS  # the server's file paths never leave it
    assert hits[0]["image_url"] == f"/photos/{hits[0]['id']}/image"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_similar_by_id_as_json_or_a_raw_image_body_with_a_collection_filter(client, served_index):
    r = client.post("/similar", json={"id": 3, "k": 3})
    assert r.status_code == 200 and r.json()["hits"][0]["id"] == 3 and len(r.json()["hits"]) == 3
    data = (served_index.photos / "stripes" / "stripes_1.jpg").read_bytes()
    r = client.post("/similar?collection=rings&k=50", content=data, headers={"content-type": "image/jpeg"})
    hits = r.json()["hits"]
    assert r.status_code == 200 and len(hits) == FAMILIES["rings"] and all(h["collections"] == ["rings"] for h in hits)


@pytest.mark.parametrize(
    ("request_kwargs", "status", "words"),
    [
        ({"json": {"id": 999}}, 404, "no indexed photo"),
        ({"json": {"id": 1, "k": 0}}, 400, "k must be"),
        ({"json": {"id": 1, "collection": "cats"}}, 404, "no collection 'cats'"),
        ({"json": {"id": "one"}}, 400, "id must be an integer"),
        ({"json": {}}, 400, "send a photo"),
        ({"content": b"k=1", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"files": {"photo": ("q.jpg", b"x", "image/jpeg")}}, 400, 'field "file"'),
    ],
)
def test_bad_similar_requests_say_what_is_wrong(client, request_kwargs, status, words):
    r = client.post("/similar", **request_kwargs)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_non_images_are_refused_with_a_clear_message(client):
    r = upload(client, b"%PDF-1.4 definitely not a photo", name="doc.pdf")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    r = upload(client, b"<!doctype html><html></html>", name="page.html")
    assert r.status_code == 415
    truncated = jpeg_bytes(pattern_image(1))[:300]
    r = upload(client, truncated)
    assert r.status_code == 400 and "corrupt or truncated" in r.json()["detail"]
    r = upload(client, b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_photo_metadata_original_file_and_thumbnail(client, served_index):
    meta = client.get("/photos/1").json()
    assert meta["id"] == 1 and meta["source"] == "folder" and meta["flagged_in"] == [] and "path" not in meta
    original = client.get("/photos/1/image")
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert original.content == (served_index.photos / meta["source_id"]).read_bytes()
    thumb = client.get("/photos/1/image", params={"size": 64})
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) == 64
    noise_id = client.post("/similar", json={"id": 1, "k": 100}).json()["hits"]
    png = next(h for h in noise_id if h["source_id"] == "stripes/zz_noise.png")
    assert client.get(f"/photos/{png['id']}/image").headers["content-type"] == "image/png"
    assert client.get("/photos/999").status_code == 404
    assert client.get("/photos/999/image").status_code == 404
    assert client.get("/photos/1/image", params={"size": 5}).status_code == 422
    assert client.get("/photos/..%2F..%2Fetc%2Fpasswd/image").status_code in (404, 422)


def test_collections_and_their_clean_ranking(client):
    collections = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    assert collections["rings"]["photos"] == FAMILIES["rings"] and collections["stripes"]["photos"] == 8
    ranked = client.get("/collections/stripes/clean", params={"drop": 1}).json()
    items = ranked["items"]
    assert ranked["photos"] == 8 and ranked["outliers"] == 1 and [i["rank"] for i in items] == list(range(1, 9))
    assert [i["distance"] for i in items] == sorted(i["distance"] for i in items)
    assert [i["outlier"] for i in items] == [False] * 7 + [True]  # the farthest photo is the one marked
    auto = client.get("/collections/rings/clean").json()
    assert auto["outliers"] == sum(i["outlier"] for i in auto["items"])
    assert client.get("/collections/cats/clean").status_code == 404
    assert client.get("/collections/rings/clean", params={"drop": 99}).status_code == 400


def test_classifier_predictions_for_a_collection_an_id_and_an_upload(client, served_index):
    assert client.get("/classifiers").json()["classifiers"] == ["elsewhere", "shapes"]
    r = client.post("/classify/shapes", json={"collection": "rings"})
    body = r.json()
    assert r.status_code == 200 and body["classes"] == ["rings", "stripes"]
    assert len(body["predictions"]) == FAMILIES["rings"]
    assert all(p["label"] == "rings" and 0.5 <= p["probability"] <= 1 for p in body["predictions"])
    assert client.post("/classify/shapes", json={"ids": [1, 2]}).json()["predictions"][1]["id"] == 2
    data = (served_index.photos / "rings" / "rings_0.jpg").read_bytes()
    one = upload(client, data, path="/classify/shapes").json()["predictions"]
    assert len(one) == 1 and one[0]["label"] == "rings"
    r = client.post("/classify/elsewhere", json={"id": 1})
    assert r.status_code == 409 and "random:1" in r.json()["detail"] and "retrain" in r.json()["detail"]
    assert client.post("/classify/nothing", json={"id": 1}).status_code == 404
    assert client.post("/classify/bad name", json={"id": 1}).status_code == 400


def test_concurrent_uploads_share_model_calls(client, server, served_index):
    data = [(served_index.photos / "stripes" / f"stripes_{i}.jpg").read_bytes() for i in range(6)] * 3
    calls0, images0 = metric(client, "imgidx_model_calls_total"), metric(client, "imgidx_model_images_total")
    start = threading.Barrier(len(data))
    statuses: list[int] = []

    def one(payload: bytes) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            start.wait()
            statuses.append(upload(c, payload, k=2).status_code)

    threads = [threading.Thread(target=one, args=(d,)) for d in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(data)
    calls, images = metric(client, "imgidx_model_calls_total") - calls0, metric(client, "imgidx_model_images_total")
    assert images - images0 == len(data) and calls < len(data) / 2, (calls, images - images0)


def test_metrics_count_requests_latency_and_index_size(client):
    before = metric(client, 'imgidx_requests_total{method="GET",route="/healthz",status="200"}')
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["photos"] == N_PHOTOS and health["model_loaded"] is True
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert metric(client, 'imgidx_requests_total{method="GET",route="/healthz",status="200"}') == before + 1
    assert metric(client, "imgidx_index_vectors") == N_PHOTOS
    assert 'imgidx_request_duration_seconds_bucket{route="/healthz",le="+Inf"}' in text.text
    assert "# TYPE imgidx_model_batch_size histogram" in text.text


def test_openapi_schema_and_page_are_served_without_any_outside_resource(client):
    paths = client.get("/openapi.json").json()["paths"]
    expected = {"/similar", "/photos/{photo_id}", "/photos/{photo_id}/image", "/collections", "/healthz", "/metrics"}
    assert expected | {"/collections/{name}/clean", "/classify/{model}", "/classifiers"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css", "/"):
        assert "http://" not in client.get(asset).text.replace("http://www.w3.org", "")
    assert client.get("/docs").status_code == 404  # Swagger UI would load its scripts from a CDN


def test_requests_naming_another_host_are_refused(client):
    r = client.get("/healthz", headers={"host": "attacker.example:8000"})
    assert r.status_code == 403 and "loopback" in r.json()["detail"]
    assert client.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200


def test_the_server_never_writes_to_the_index(client, served_index):
    before = served_index.fingerprint()
    client.post("/similar", json={"id": 2})
    client.get("/collections/rings/clean")
    client.post("/classify/shapes", json={"collection": "stripes"})
    assert served_index.fingerprint() == before


def test_token_is_required_on_every_request_and_the_upload_cap_holds(served_index):
    env = {**served_index.env, "IMGIDX_TOKEN": "s3cret-token"}
    with (
        spawned(served_index.home, "--max-upload-mb", "0.5", "--max-batch", "2", env=env) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        for path in ("/healthz", "/metrics", "/collections", "/static/app.js", "/photos/1/image", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and "token" in r.json()["detail"], path
        assert c.get("/healthz", headers={"authorization": "Bearer wrong"}).status_code == 401
        auth = {"authorization": "Bearer s3cret-token"}
        assert c.get("/healthz", headers=auth).status_code == 200
        assert c.post("/similar", json={"id": 1}).status_code == 401
        login = c.get("/", params={"token": "s3cret-token"})  # the browser's way in: a cookie, then the page
        assert login.status_code == 303 and "HttpOnly" in login.headers["set-cookie"]
        assert c.get("/collections").status_code == 200  # httpx kept the cookie
        big = jpeg_bytes(Image.effect_noise((1200, 1200), 90).convert("RGB"))
        assert len(big) > 2**19
        r = c.post("/similar", files={"file": ("big.jpg", big, "image/jpeg")})
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks():
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        r = c.post("/similar", content=chunks(), headers={"content-type": "image/jpeg"})  # no Content-Length
        assert r.status_code == 413
        small = (served_index.photos / "rings" / "rings_1.jpg").read_bytes()
        assert c.post("/similar", files={"file": ("ok.jpg", small, "image/jpeg")}).status_code == 200


def test_binding_beyond_loopback_needs_a_token(served_index):
    args = ["--home", str(served_index.home), "serve", "--host", "0.0.0.0"]
    r = CliRunner().invoke(app, args, env={"IMGIDX_TOKEN": ""})
    assert r.exit_code == 1 and "--token" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["--home", str(served_index.home.parent / "none"), "serve"])
    assert r.exit_code == 1 and "no index" in r.stderr


def test_photos_that_a_build_adds_beside_the_server_are_served(served_index, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(served_index.home, home)
    extra = tmp_path / "more"
    extra.mkdir()
    for i in range(3):
        pattern_image(900 + i, kind="checks").save(extra / f"checks_{i}.jpg", quality=90)
    with (
        spawned(home, "--refresh", "0.2", env=served_index.env) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        assert c.get("/healthz").json()["photos"] == N_PHOTOS
        build(home, extra, served_index.env, "--as", "checks")  # a writer beside the running server
        deadline = time.monotonic() + 30
        while c.get("/healthz").json()["photos"] != N_PHOTOS + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/healthz").json()["photos"] == N_PHOTOS + 3
        hits = c.post("/similar", json={"id": N_PHOTOS + 1, "k": 1, "collection": "checks"}).json()["hits"]
        assert hits[0]["id"] == N_PHOTOS + 1 and hits[0]["collections"] == ["checks"]
        assert "checks" in {x["name"] for x in c.get("/collections").json()["collections"]}
        # `clean --apply` beside the server: the flag shows, and flagged photos leave `similar` in that collection
        r = CliRunner().invoke(app, ["--home", str(home), "clean", "stripes", "--drop", "1", "--apply", "--json"])
        assert r.exit_code == 0, r.stderr
        time.sleep(0.3)
        stripes = next(x for x in c.get("/collections").json()["collections"] if x["name"] == "stripes")
        assert stripes["flagged"] == 1
        ranked = c.get("/collections/stripes/clean", params={"drop": 1}).json()["items"]
        flagged = [i["id"] for i in ranked if i["flagged_in_index"]]
        assert flagged == [ranked[-1]["id"]] and c.get(f"/photos/{flagged[0]}").json()["flagged_in"] == ["stripes"]
        query = {"id": ranked[0]["id"], "k": 50, "collection": "stripes"}
        assert len(c.post("/similar", json=query).json()["hits"]) == 7
        assert len(c.post("/similar", json={**query, "include_flagged": True}).json()["hits"]) == 8


@pytest.mark.long  # 50 clients for a while: make test-long (CI runs it)
def test_the_load_benchmark_runs_against_a_server_without_errors(server, served_index, tmp_path):
    from bench.load import main

    photo = served_index.photos / "rings" / "rings_4.jpg"
    args = ["--url", server.url, "--clients", "8", "--duration", "1.5", "--photo", str(photo)]
    assert main([*args, "--json", str(tmp_path / "load.json")]) == 0
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["errors"] == 0 and report["ok"] == report["requests"] > 8 and report["clients"] == 8
    assert report["latency"]["p50_ms"] <= report["latency"]["p99_ms"] <= report["latency"]["max_ms"]
    assert report["index_vectors"] == N_PHOTOS
