"""`imgidx build --from-urls`: a CSV of URLs served by a local HTTP server, indexed end to end through the same
pipeline as Flickr (download through the Fetcher, the photo layout, decode, embed, store), then searched."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import json
import os
import re
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from tests.conftest import pattern_image

pytestmark = pytest.mark.slow
runner = CliRunner()
RANDOM = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]  # short batches are padded


def run(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    for kind in ("stripes", "rings"):
        for i in range(3):
            pattern_image(10 * len(kind) + i, kind=kind).save(root / f"{kind}_{i}.jpg", quality=90)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def url_list(path: Path, base: str) -> Path:
    rows = [
        {"url": f"{base}/stripes_{i}.jpg", "key": f"s{i}", "title": f"stripes {i}", "owner": "ann", "license": "4",
         "page_url": f"https://example.org/s{i}", "collection": "stripes"}
        for i in range(3)
    ]  # fmt: skip
    rows += [{"url": f"{base}/rings_{i}.jpg", "caption": f"rings {i}"} for i in range(3)]  # no key: sha1(url)
    rows.append({"url": f"{base}/missing.jpg", "key": "../../etc/passwd"})  # a 404, and a hostile key
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["url", "key", "title", "owner", "license", "page_url", "caption", "collection"]
        )
        w.writeheader()
        w.writerows(rows)
    return path


def test_a_url_list_is_downloaded_embedded_and_searchable(served, tmp_path):
    listing = url_list(tmp_path / "shapes.csv", served)
    report = json.loads(run("build", "--from-urls", listing, *RANDOM, "--json").stdout)
    assert report["embedded"] == 6 and report["downloaded"] == 6 and report["skipped"] == 1
    assert report["failures"][0]["source_id"] == "../../etc/passwd" and "404" in report["failures"][0]["reason"]

    info = json.loads(run("info", "--json").stdout)
    assert info["photos"] == 6 and info["collections"] == {"stripes": 3, "shapes": 3}  # column, else the file stem

    hits = json.loads(run("similar", "--id", 1, "-k", 6, "--json").stdout)["hits"]
    assert hits[0]["id"] == 1 and hits[0]["score"] >= 0.999 and len(hits) == 6
    by_id = {h["source_id"]: h for h in hits}
    s0 = by_id["s0"]
    assert (s0["title"], s0["owner"], s0["license"], s0["page_url"]) == (
        "stripes 0",
        "ann",
        "CC BY 2.0",
        "https://example.org/s0",
    )
    ring_ids = {hashlib.sha1(f"{served}/rings_{i}.jpg".encode()).hexdigest() for i in range(3)}
    assert ring_ids <= set(by_id) and {by_id[r]["title"] for r in ring_ids} == {"rings 0", "rings 1", "rings 2"}
    home = Path(os.environ["IMGIDX_HOME"]).resolve()
    for h in hits:  # each file under the home's photos/urls/, named by a hash of its key, never by the key itself
        path = Path(h["path"]).resolve()
        assert path.is_file() and path.relative_to(home / "photos" / "urls")
        assert re.fullmatch(r"[0-9a-z]+\.jpg", path.name) and h["source_id"] not in path.name
    assert len({h["path"] for h in hits}) == 6
    assert sorted(p.name for p in home.rglob("*") if p.is_file() and "passwd" in str(p)) == []

    again = json.loads(run("build", "--from-urls", listing, *RANDOM, "--as", "more", "--json").stdout)
    assert again["already_indexed"] == 6 and again["embedded"] == 0 and again["downloaded"] == 0
    info = json.loads(run("info", "--json").stdout)
    assert info["photos"] == 6 and info["collections"] == {"stripes": 3, "shapes": 3, "more": 3}
