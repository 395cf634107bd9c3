"""`imgidx build` from the local fake Flickr end to end: real flickrapi client, real fetcher, real VGG16 (random
weights), real SQLite + FAISS. Only Flickr itself is fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.licenses import license_name

pytestmark = pytest.mark.slow
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def flickr_env(fake_flickr, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", fake_flickr.api_key)
    monkeypatch.setenv("FLICKR_API_SECRET", fake_flickr.api_secret)
    monkeypatch.setenv("IMGIDX_FLICKR_REST_URL", fake_flickr.rest_url)
    return fake_flickr


def expected_ids(fake, query, n, sort="relevance"):
    return [p.id for p in fake.photos_for(query, sort=sort)[:n]]


def test_build_two_collections_then_similar_info_and_an_idempotent_rebuild(flickr_env):
    fake = flickr_env
    report = json.loads(
        run("build", "cat", "dog", "--count", 10, "--weights", "random:0", "--batch-size", 4, "--json").stdout
    )
    cats, dogs = expected_ids(fake, "cat", 10), expected_ids(fake, "dog", 10)
    deleted = {i for i in cats + dogs if fake.corpus.is_deleted(i)}
    assert report["requested"] == len(set(cats) | set(dogs))
    assert report["embedded"] + report["reused"] == report["requested"] - len(deleted)
    assert {f["source_id"] for f in report["failures"]} == deleted
    assert all("unavailable" in f["reason"] for f in report["failures"])

    info = json.loads(run("info", "--json").stdout)
    assert info["collections"] == {"cat": len(set(cats) - deleted), "dog": len(set(dogs) - deleted)}
    assert info["photos"] == len((set(cats) | set(dogs)) - deleted) == info["index"]["size"]
    assert info["stamp"]["layer"] == "fc2" and info["stamp"]["dim"] == 4096 and info["stamp"]["weights"] == "random:0"
    assert info["failures"] == len(deleted)

    # an indexed photo is its own best neighbour, with its attribution intact
    hits = json.loads(run("similar", "--id", 1, "-k", 5, "--json").stdout)["hits"]
    assert hits[0]["id"] == 1 and hits[0]["score"] >= 0.999
    rec = fake.photo(hits[0]["source_id"])
    assert hits[0]["title"] == rec.title and hits[0]["license"] == license_name(rec.license)
    assert hits[0]["page_url"] == f"https://www.flickr.com/photos/{rec.owner}/{rec.id}/"
    assert Path(hits[0]["path"]).is_file() and Path(hits[0]["path"]).name.startswith(rec.id + ".")
    by_file = json.loads(run("similar", hits[0]["path"], "-k", 1, "--json").stdout)["hits"]
    assert by_file[0]["id"] == 1 and by_file[0]["score"] >= 0.999

    # a second run downloads nothing and embeds nothing
    static_before = fake.count_requests("static")
    again = json.loads(
        run("build", "cat", "dog", "--count", 10, "--weights", "random:0", "--batch-size", 4, "--json").stdout
    )
    assert again["embedded"] == 0 and again["downloaded"] == 0 and fake.count_requests("static") == static_before
    assert json.loads(run("info", "--json").stdout)["photos"] == info["photos"]


def test_photo_found_by_two_searches_is_stored_once_in_both_collections(flickr_env):
    args = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", 4, "--json"]
    first = json.loads(run("build", "puppy", "--as", "pups", "-n", 8, *args).stdout)
    second = json.loads(run("build", "puppy", "--as", "young_dogs", "-n", 5, *args).stdout)
    assert second["embedded"] == 0 and second["already_indexed"] == 5
    info = json.loads(run("info", "--json").stdout)
    assert info["photos"] == first["index"]["photos"]
    assert info["collections"]["young_dogs"] == 5 - second["failed_before"]
    hits = json.loads(run("similar", "--id", 1, "-k", 1, "--json").stdout)["hits"]
    assert hits[0]["collections"] == ["pups", "young_dogs"]


def test_subprocess_build_and_similar(flickr_env, tmp_path):
    """The installed console script, as a user runs it: exit codes, stdout JSON, stderr progress."""
    env = {**os.environ, "IMGIDX_HOME": str(tmp_path / "sub"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "imgidx"]
    built = subprocess.run(
        [*cmd, "build", "dog", "-n", "6", "--weights", "random:0", "--layer", "block5_pool", "--batch-size", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "newly embedded" in built.stdout and "flickr: 6 photos for 'dog'" in built.stderr
    sim = subprocess.run(
        [*cmd, "similar", "--id", "2", "-k", "3", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert sim.returncode == 0 and json.loads(sim.stdout)["hits"][0]["id"] == 2
    bad = subprocess.run([*cmd, "similar", "--id", "999"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("error: no indexed photo with id 999")
