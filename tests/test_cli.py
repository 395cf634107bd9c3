"""The `imgidx` command end to end on a folder (CliRunner, in process), with the real embedder and store."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from tests.conftest import make_photo_dir

runner = CliRunner()
RANDOM = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]  # short batches are padded


def run(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """One build for the module (each costs a VGG16 graph); tests get a copy of its home."""
    root = tmp_path_factory.mktemp("built")
    photo_dir = make_photo_dir(root)
    (photo_dir / "stripes" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photo_dir / "notes.txt").write_text("not an image, not even looked at")
    result = run("--home", root / "home", "build", "--from-dir", photo_dir, *RANDOM, "--json")
    return root / "home", photo_dir, json.loads(result.stdout)


@pytest.fixture
def built(built_once):
    home, photo_dir, report = built_once
    shutil.copytree(home, os.environ["IMGIDX_HOME"])  # the test's own home (conftest.isolated_env)
    return photo_dir, report


@pytest.mark.slow
def test_folder_build_indexes_subfolders_as_collections(built):
    _, report = built
    assert report["embedded"] == 13 and report["skipped"] == 1
    assert "corrupt" in report["failures"][0]["reason"] and report["failures"][0]["source_id"] == "stripes/broken.jpg"
    info = json.loads(run("info", "--json").stdout)
    assert info["photos"] == 13 and info["collections"] == {"photos": 1, "rings": 6, "stripes": 6}
    assert info["stamp"] == {
        **info["stamp"],
        "model": "vgg16",
        "layer": "block5_pool",
        "weights": "random:0",
        "dim": 512,
    }
    assert info["index"] == {"kind": "flat", "size": 13, "storage": "float32", "requested": "auto"}
    assert info["failures"] == 1
    failed = json.loads(run("info", "--failures", "--json").stdout)["failed"]
    assert [f["source_id"] for f in failed] == ["stripes/broken.jpg"]


@pytest.mark.slow
def test_similar_by_id_and_by_file_return_the_photo_first(built):
    photo_dir, _ = built
    hits = json.loads(run("similar", "--id", 3, "-k", 4, "--json").stdout)["hits"]
    assert hits[0]["id"] == 3 and hits[0]["score"] >= 0.999 and len(hits) == 4
    assert set(hits[0]) >= {"id", "source_id", "score", "collections", "title", "owner", "license", "page_url", "path"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    target = photo_dir / "rings" / "rings_2.jpg"
    hits = json.loads(run("similar", target, "-k", 2, "--json").stdout)["hits"]
    assert hits[0]["source_id"] == "rings/rings_2.jpg" and hits[0]["score"] >= 0.999
    only = json.loads(run("similar", target, "--in", "stripes", "--json").stdout)["hits"]
    assert only and all(h["collections"] == ["stripes"] for h in only)


@pytest.mark.slow
def test_second_build_does_nothing(built):
    photo_dir, _ = built
    again = json.loads(run("build", "--from-dir", photo_dir, *RANDOM, "--json").stdout)
    assert again["embedded"] == 0 and again["already_indexed"] == 13 and again["index"]["photos"] == 13


@pytest.mark.slow
def test_other_weights_are_refused_by_similar_and_build(built):
    photo_dir, _ = built
    r = run("similar", "--id", 1, "--weights", "random:1", ok=False)
    assert r.exit_code == 1 and "random:0" in r.stderr and "random:1" in r.stderr and "Traceback" not in r.stderr
    r = run("build", "--from-dir", photo_dir, "--weights", "random:0", "--layer", "fc2", ok=False)
    assert r.exit_code == 1 and "block5_pool" in r.stderr


@pytest.mark.slow
def test_table_output_is_readable(built):
    out = run("similar", "--id", 1, "-k", 2).stdout
    assert "score" in out and "1.0000" in out
    assert "stripes" in run("info").stdout


def test_bad_input_gives_one_line_and_exit_1(tmp_path):
    cases = [
        (["info"], "imgidx build"),
        (["build"], "--from-dir"),
        (["build", "cat", "--weights", "random:0"], "FLICKR_API_KEY"),
        (["build", "--from-dir", tmp_path / "missing", "--weights", "random:0"], "not a folder"),
        (["build", "--from-dir", tmp_path, "--weights", "/no/such/file.h5"], "does not exist"),
        (["build", "--from-dir", tmp_path, "--weights", "random:0", "--layer", "fc7"], "unknown layer"),
    ]
    for args, expected in cases:
        r = run(*args, ok=False)
        assert r.exit_code == 1, (args, r.stdout, r.stderr)
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


@pytest.mark.slow
def test_similar_with_an_unusable_photo_says_why(built, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"GIF89a garbage")
    r = run("similar", bad, ok=False)
    assert r.exit_code == 1 and "cannot be used" in r.stderr


def test_every_command_has_help_and_is_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"build", "similar", "info"} <= set(commands)
    for name in commands:
        r = run(name, "--help")
        assert "Usage" in r.stdout and len(r.stdout) > 200
        assert re.search(rf"imgidx {name}\b", readme), f"`imgidx {name}` is not documented in README.md"


@pytest.mark.slow
def test_precision_is_stamped_kept_by_later_builds_and_a_mismatch_is_refused(photo_dir):
    report = json.loads(run("build", "--from-dir", photo_dir, *RANDOM, "--precision", "fp32", "--json").stdout)
    assert report["embedded"] == 13
    assert json.loads(run("info", "--json").stdout)["stamp"]["precision"] == "fp32"
    (photo_dir / "rings" / "more.jpg").write_bytes((photo_dir / "loose.jpg").read_bytes())
    again = json.loads(run("build", "--from-dir", photo_dir, *RANDOM, "--json").stdout)  # no --precision: the index's
    assert again["reused"] == 1 and again["already_indexed"] == 13
    r = run("build", "--from-dir", photo_dir, *RANDOM, "--precision", "bf16", ok=False)
    assert r.exit_code == 1 and "fp32" in r.stderr and "bf16" in r.stderr and "Traceback" not in r.stderr
    r = run("build", "--from-dir", photo_dir, *RANDOM, "--precision", "int4", ok=False)
    assert r.exit_code == 1 and "fp32|bf16|fp16|int8" in r.stderr


@pytest.mark.slow
def test_demo_builds_and_searches_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGIDX_WEIGHTS_URL", "http://127.0.0.1:9/nowhere/")  # offline: the download fails at once
    r = run("--home", tmp_path / "demo", "demo", "--per-family", 3)
    assert (
        "random weights" in r.stderr and "only the plumbing" in r.stderr and "indexing 9 generated photos" in r.stderr
    )
    assert "could not be downloaded" in r.stderr and "give that file's path as the weights" in r.stderr  # printed whole
    assert r.stdout.count("nearest to") == 3 and "new_rings.jpg" in r.stdout
