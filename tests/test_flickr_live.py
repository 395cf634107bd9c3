"""The real Flickr API (the `network` marker): skipped unless IMGIDX_LIVE=1 and a key and secret are set
(`IMGIDX_LIVE=1 FLICKR_API_KEY=… FLICKR_API_SECRET=… make test-all`). Everything else runs against the local fake
Flickr; this one checks that the fake has not drifted from the real service's answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from tests.conftest import LIVE_FLICKR

LIVE = os.environ.get("IMGIDX_LIVE") == "1" and all(LIVE_FLICKR)

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not LIVE, reason="the real Flickr API: IMGIDX_LIVE=1, FLICKR_API_KEY and FLICKR_API_SECRET"),
]


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


def test_a_small_build_from_the_real_flickr_api(monkeypatch):
    key, secret = LIVE_FLICKR
    monkeypatch.setenv("FLICKR_API_KEY", key)
    monkeypatch.setenv("FLICKR_API_SECRET", secret)
    monkeypatch.delenv("IMGIDX_ALLOW_PRIVATE_HOSTS")  # real photo hosts: the SSRF check as users run it
    args = ("--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4", "--json")
    report = json.loads(run("build", "kitten", "--count", 8, *args).stdout)
    assert report["requested"] == 8 and report["embedded"] + report["reused"] >= 6, report
    info = json.loads(run("info", "--json").stdout)
    assert info["collections"] == {"kitten": info["photos"]} and info["photos"] >= 6
    hits = json.loads(run("similar", "--id", 1, "-k", 3, "--json").stdout)["hits"]
    assert hits[0]["id"] == 1 and hits[0]["score"] >= 0.999
    assert hits[0]["page_url"].startswith("https://www.flickr.com/photos/") and hits[0]["license"]
    assert Path(hits[0]["path"]).is_file()
