"""What a build accepts before it stores anything (issue 18.4): collection names from every source, checked with
one line that says what is allowed; and a build that tried photos and indexed none fails (exit 1) with a summary."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer import names
from imgidx.indexer.errors import InvalidCollectionName
from imgidx.indexer.sources.flickr import FlickrSource
from imgidx.indexer.sources.folder import FolderSource
from imgidx.indexer.sources.urllist import UrlListSource
from tests.odd_images import corpus, good

runner = CliRunner()
MODEL = ["--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]
BAD = {
    "": "empty",
    "   ": "empty",
    "a\nb": "control character",
    "tab\there": "control character",
    "line\u2028sep": "control character",
    "del\x7f": "control character",
    "a/b": "'/'",
    "a\\b": "'\\\\'",
    "..": "'..'",
    "x..y": "'..'",
    ".hidden": "starts with '.'",
    " cats": "space",
    "x" * 101: "101 bytes",
    "é" * 51: "102 bytes",  # 51 characters, 102 bytes: the limit is in bytes
}
GOOD = ["cats", "Chats noirs", "犬", "a.b", "x" * 100, "é" * 50, "c-1_2 (3)", "=SUM(A1)"]


@pytest.mark.parametrize("name", list(BAD), ids=lambda n: repr(n)[:20])
def test_a_bad_name_is_refused_saying_what_is_allowed(name):
    with pytest.raises(InvalidCollectionName) as e:
        names.check(name, "here")
    message = str(e.value)
    assert BAD[name] in message and names.RULE in message and "\n" not in message, message


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    assert names.check(name, "here") == name


def test_every_source_checks_the_names_it_makes(tmp_path):
    root = tmp_path / "photos"
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "a.jpg").write_bytes(good(0))
    (root / "bad\nname").mkdir()
    (root / "bad\nname" / "b.jpg").write_bytes(good(1))
    with pytest.raises(InvalidCollectionName, match=r"sub-folder 'bad\\nname' .* rename the sub-folder$"):
        list(FolderSource(root).photos())
    (root / "bad\nname" / "b.jpg").unlink()
    with pytest.raises(InvalidCollectionName, match="give their collection a name") as e:
        (root / "top.jpg").write_bytes(good(2))
        list(FolderSource(root, as_name="a/b").photos())
    assert e.value.nameable

    path = tmp_path / "list.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["url", "collection"])
        w.writeheader()
        w.writerows([{"url": "http://e.example/1.jpg", "collection": "ok"}])
        w.writerows([{"url": "http://e.example/2.jpg", "collection": "x" * 300}])
    with pytest.raises(InvalidCollectionName, match=r"list.csv, row 3: .* 300 bytes long"):
        list(UrlListSource(path).photos())

    # a query is fine to search with; the collection it would name is not, and it can be named instead
    with pytest.raises(InvalidCollectionName, match="query 'cats/dogs'") as e:
        FlickrSource("cats/dogs")
    assert e.value.nameable
    assert FlickrSource("cats/dogs", as_name="cats-and-dogs").queries[0].collection == "cats-and-dogs"
    with pytest.raises(InvalidCollectionName, match="the collection name given"):
        FlickrSource("cats", as_name="../x")


def test_a_bad_name_stops_the_build_before_anything_is_stored(tmp_path):
    root = tmp_path / "photos"
    for folder in ("cats", "dogs\ttab"):
        (root / folder).mkdir(parents=True)
        (root / folder / "a.jpg").write_bytes(good(len(folder)))
    r = runner.invoke(app, ["build", "--from-dir", str(root), *MODEL])
    assert r.exit_code == 1 and r.stderr.startswith("error: sub-folder 'dogs\\ttab' of "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and names.RULE in r.stderr
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 1 or json.loads(r.stdout)["photos"] == 0, r.stdout + r.stderr

    r = runner.invoke(app, ["build", "--from-dir", str(root / "cats"), "--as", "a/b", *MODEL])
    assert (
        r.exit_code == 1
        and "the files directly in" in r.stderr
        and r.stderr.rstrip().endswith("(with --as NAME; for a query, one query per build)")
    )


def test_a_build_in_which_every_photo_failed_exits_1_with_a_summary(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    cut = corpus()
    for name in ("truncated_05.jpg", "truncated_05.png", "truncated_05.gif"):
        (root / name).write_bytes(cut[name])
    (root / "empty.jpg").write_bytes(b"")
    r = runner.invoke(app, ["build", "--from-dir", str(root), *MODEL, "--json"])
    assert r.exit_code == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["all_failed"] is True and report["skipped"] == 4 and report["embedded"] == 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nothing was indexed: all 4 photos tried failed (")
    assert "corrupt or truncated image" in last and "imgidx info --failures" in last
    # the same build again: nothing new tried (the failures are stored), nothing failed: not an error
    again = runner.invoke(app, ["build", "--from-dir", str(root), *MODEL, "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["failed_before"] == 4, again.stderr
    # (a run that indexes one photo and skips others exits 0: tests/test_hostile.py, test_decode_total.py)


def test_the_library_report_says_so(tmp_path):
    import imgidx

    root = tmp_path / "broken"
    root.mkdir()
    (root / "a.png").write_bytes(corpus()["truncated_05.png"])
    report = imgidx.open(tmp_path / "home").build(
        imgidx.sources.Folder(root), weights="random:0", layer="block5_pool", batch_size=4
    )
    assert report.all_failed and report.summary.startswith("nothing was indexed: all 1 photo tried failed")
    with sqlite3.connect(tmp_path / "home" / "imgidx.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM photos WHERE state='failed'").fetchone()[0] == 1
