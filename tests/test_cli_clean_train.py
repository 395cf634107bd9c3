"""clean / audit / train / classify end to end through the CLI on a real store of synthetic clustered vectors
(exact expected flags and labels), plus the model-backed paths (classify files, activations, labels)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store

runner = CliRunner()
DIM = 512


def run(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.stdout + result.stderr
    return result


def cluster(rng, centre, n, spread=0.15):
    v = centre + spread * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def store_ids():
    """cat: 40 cats + 3 planted dogs; dog: 40 dogs + 2 planted cats (swapped labels)."""
    rng = np.random.default_rng(0)
    c_cat, c_dog = rng.normal(size=DIM), rng.normal(size=DIM)
    c_cat, c_dog = c_cat / np.linalg.norm(c_cat), c_dog / np.linalg.norm(c_dog)
    groups = {"cat": [(c_cat, 40), (c_dog, 3)], "dog": [(c_dog, 40), (c_cat, 2)]}
    planted = {}
    with Store(os.environ["IMGIDX_HOME"]) as store:
        store.ensure_stamp(Stamp("vgg16", "block5_pool", "random:0", DIM))
        n = 0
        for name, parts in groups.items():
            for j, (centre, count) in enumerate(parts):
                photos = [Photo("flickr", str(1000 + n + i), name, title=f"{name}-{j}-{i}") for i in range(count)]
                ids = store.add_photos(photos)
                store.add_vectors([(pid, "", f"sha{pid}") for pid in ids], cluster(rng, centre, count))
                n += count
                if j == 1:
                    planted[name] = set(ids)
        store.save_index()
    return planted


@pytest.mark.parametrize("method", ["centroid", "auto"])
def test_clean_ranks_planted_outliers_last_and_flags_exactly_them(store_ids, method):
    out = json.loads(run("clean", "cat", "--method", method, "--json").stdout)
    photos = out["photos"]
    assert out["collection"] == "cat" and len(photos) == 43
    assert {p["id"] for p in photos[-3:]} == store_ids["cat"]
    assert {p["id"] for p in photos if p["flagged"]} == store_ids["cat"]
    # the seed's loop ranks by distance to the centroid; auto by its score (the other collections' evidence)
    key = "distance" if method == "centroid" else "score"
    assert [p[key] for p in photos] == sorted(p[key] for p in photos)
    assert all(p["iteration"] == 1 for p in photos if p["flagged"])
    assert set(photos[0]) >= {"id", "source_id", "distance", "z", "flagged", "iteration", "reason", "score"}
    assert all(bool(p["reason"]) == p["flagged"] for p in photos)
    if method == "auto":  # `dog` is the other collection here
        assert (out["method"], out["rivals"], out["allies"]) == ("index", ["dog"], [])
        assert all(
            re.match(r"nearer to dog \(margin -\d\.\d{3}\); \d+ of 10 neighbours in dog", p["reason"])
            for p in photos
            if p["flagged"]
        )
    else:
        assert all(re.fullmatch(r"z \d+\.\d from the centre", p["reason"]) for p in photos if p["flagged"])


def test_clean_table_lists_the_flagged_photos_and_all_of_them_with_all(store_ids):
    def ids_in(table: str) -> set[int]:
        return {int(m) for m in re.findall(r"^\S*\s*\d+\s*\S\s*(\d+)\s", table, re.M)}

    result = run("clean", "cat")
    assert "43 photos, 3 flagged" in result.stdout
    assert ids_in(result.stdout) == store_ids["cat"]
    assert "40 kept photos not listed" in result.stderr
    result = run("clean", "cat", "--all")
    assert len(ids_in(result.stdout)) == 43 and "not listed" not in result.stderr


def test_clean_drop_n_flags_the_n_farthest(store_ids):
    photos = json.loads(run("clean", "cat", "--drop", 5, "--json").stdout)["photos"]
    assert [p["flagged"] for p in photos].count(True) == 5 and all(p["flagged"] for p in photos[-5:])


def test_clean_against_another_collection(store_ids):
    photos = json.loads(run("clean", "cat", "--against", "dog", "--json").stdout)["photos"]
    # measured against the dogs' centre, the 3 planted dogs are the most central ones
    assert {p["id"] for p in photos[:3]} == store_ids["cat"]


def test_apply_then_undo_flags_and_their_effect(store_ids):
    run("clean", "cat", "--apply")
    info = json.loads(run("info", "--json").stdout)
    assert info["collections"]["cat"] == 43 and info["clean"]["cat"] == 40
    some_cat = min(store_ids["dog"])  # a planted cat in "dog": query it within "cat"
    hits = json.loads(run("similar", "--id", some_cat, "--in", "cat", "-k", 50, "--json").stdout)["hits"]
    assert not {h["id"] for h in hits} & store_ids["cat"]
    hits = json.loads(run("similar", "--id", some_cat, "--in", "cat", "-k", 50, "--include-flagged", "--json").stdout)[
        "hits"
    ]
    assert store_ids["cat"] <= {h["id"] for h in hits}
    run("clean", "cat", "--undo")
    assert json.loads(run("info", "--json").stdout)["clean"]["cat"] == 43


def test_audit_recovers_swapped_labels(store_ids):
    out = json.loads(run("audit", "cat", "dog", "--json").stdout)
    suspects = {p["id"]: p["suggested"] for p in out["photos"]}
    assert suspects == {**dict.fromkeys(store_ids["cat"], "dog"), **dict.fromkeys(store_ids["dog"], "cat")}


def test_train_reports_and_saves_then_classify_a_collection(store_ids):
    run("clean", "cat", "--apply")  # flagged photos are left out of training
    out = json.loads(run("train", "pets", "cat", "dog", "--json").stdout)
    assert out["classes"] == ["cat", "dog"] and out["n_train"] + out["n_test"] == 40 + 42
    assert set(out) >= {"accuracy", "confusion", "misclassified"}
    assert sum(map(sum, out["confusion"])) == out["n_test"]
    # the two cats filed under "dog" are the only photos it can get wrong
    assert set(out["misclassified"]) <= store_ids["dog"]
    preds = json.loads(run("classify", "pets", "--in", "cat", "--apply", "--json").stdout)["predictions"]
    by_id = {p["id"]: p["label"] for p in preds}
    assert all(by_id[i] == "dog" for i in store_ids["cat"]) and list(by_id.values()).count("cat") == 40
    with Store(os.environ["IMGIDX_HOME"], readonly=True) as store:
        assert store.db.execute("SELECT COUNT(*) FROM predictions WHERE model='pets'").fetchone()[0] == 43


def test_classifier_with_another_stamp_is_refused(store_ids, tmp_path):
    run("train", "pets", "cat", "dog")
    with Store(os.environ["IMGIDX_HOME"]) as store, store.db:
        store.db.execute("UPDATE meta SET value=replace(value, 'random:0', 'random:9') WHERE key='stamp'")
    r = run("classify", "pets", "--in", "cat", ok=False)
    assert r.exit_code == 1 and "random:0" in r.stderr and "random:9" in r.stderr


def test_errors_are_one_line(store_ids):
    for args, text in [
        (["clean", "nope"], "no collection 'nope'"),
        (["train", "x", "cat"], "two different"),
        (["train", "../evil", "cat", "dog"], "classifier names"),
        (["classify", "missing", "--in", "cat"], "no classifier"),
        (["clean", "cat", "--drop", 99], "drop"),
        (["audit", "cat"], "two different"),
    ]:
        r = run(*args, ok=False)
        assert r.exit_code == 1 and text in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_clean_sheet_is_written(store_ids, tmp_path):
    run("clean", "cat", "--sheet", tmp_path / "s.html")
    html = (tmp_path / "s.html").read_text()
    assert html.count("outlier") >= 3 and "cat-1-0" in html


@pytest.mark.slow
def test_classify_photo_files_uses_the_index_embedder(photo_dir, tmp_path):
    run("build", "--from-dir", photo_dir, "--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4")
    run("train", "shapes", "stripes", "rings")
    photo = photo_dir / "rings" / "rings_1.jpg"
    [pred] = json.loads(run("classify", "shapes", photo, "--json").stdout)["predictions"]
    assert pred["label"] in ("stripes", "rings") and 0.5 <= pred["probability"] <= 1.0
    # the file goes through the index's embedder: the label and probability of the photo's stored vector (random
    # weights make no good classifier, so the right label here is the one the index's own vector gets)
    [itself] = json.loads(run("similar", photo, "-k", 1, "--json").stdout)["hits"]
    stored = json.loads(run("classify", "shapes", "--in", "rings", "--json").stdout)["predictions"]
    [same] = [p for p in stored if p["id"] == itself["id"]]
    assert itself["score"] >= 0.999 and pred["label"] == same["label"]
    assert pred["probability"] == pytest.approx(same["probability"], abs=1e-3)


@pytest.mark.slow
def test_activations_grid_png(tmp_path):
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(photo)
    run("activations", photo, "--layer", "block1_conv1", "-o", tmp_path / "g.png", "--weights", "random:0")
    grid = Image.open(tmp_path / "g.png")
    assert grid.size == (16 * 225, 4 * 225)  # 64 maps of 224x224, 16 per row, 1 px gaps
    r = run("activations", photo, "--layer", "fc2", "--weights", "random:0", ok=False)
    assert r.exit_code == 1 and "block1_conv1" in r.stderr


@pytest.mark.slow
def test_labels_with_full_weights_and_offline_message(tmp_path):
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (300, 200), (20, 130, 30)).save(photo)
    out = json.loads(run("labels", photo, "--weights", "random:0", "--json").stdout)["labels"]
    assert len(out) == 5 and all(r["wnid"].startswith("n") and r["label"] for r in out)
    assert [r["probability"] for r in out] == sorted((r["probability"] for r in out), reverse=True)
    r = run("labels", photo, ok=False)  # imagenet weights: not cached, no internet
    assert r.exit_code == 1 and "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in r.stderr
