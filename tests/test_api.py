"""The public Python API, used as a library user would: `import imgidx` and nothing else of ours (the pictures are
drawn by imgidx.search.demo). One small real index (random weights, block5_pool) shared by the module."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

import imgidx
from imgidx.search.demo import draw

pytestmark = pytest.mark.slow  # builds the VGG16 graph (random weights)
README = Path(__file__).resolve().parents[1] / "README.md"
FAMILIES = ("stripes", "rings")
PER_FAMILY = 6


def make_photos(root: Path) -> Path:
    for f, family in enumerate(FAMILIES):
        (root / family).mkdir(parents=True)
        for i in range(PER_FAMILY):
            draw(family, 100 * f + i, size=(240, 180)).save(root / family / f"{family}_{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    settings = imgidx.Settings(
        home=root / "data",
        weights="random:0",
        keras_home=root / "keras",
        cache_dir=root / "cache",
        weights_url="http://127.0.0.1:9/vgg16/",  # never the internet
        runtime="keras",  # no runtime measurement (tests/test_onnx.py covers `auto`)
    )
    photos = make_photos(root / "photos")
    idx = imgidx.open(settings=settings)
    progress: list[tuple[int, int]] = []
    report = idx.build(
        imgidx.sources.Folder(photos),
        layer="block5_pool",
        batch_size=4,  # a short last batch is padded to the batch size
        on_progress=lambda done, total: progress.append((done, total)),
    )
    return idx, photos, report, progress


def test_open_reads_nothing_and_a_missing_index_says_so(tmp_path):
    idx = imgidx.open(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    for call in (idx.info, lambda: idx.similar(id=1), idx.verify, lambda: idx.clean("x")):
        with pytest.raises(imgidx.NoIndexError, match="no index in"):
            call()
    assert issubclass(imgidx.NoIndexError, imgidx.StoreError) and issubclass(imgidx.StoreError, imgidx.ImgidxError)


def test_build_reports_and_a_second_build_does_nothing(world):
    idx, photos, report, progress = world
    assert isinstance(report, imgidx.BuildReport)
    assert report.embedded == 2 * PER_FAMILY and report.skipped == 0 and report.index["photos"] == 2 * PER_FAMILY
    assert progress[-1] == (2 * PER_FAMILY, 2 * PER_FAMILY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.embedded = 0  # type: ignore[misc]
    again = idx.build(imgidx.sources.Folder(photos))  # layer and weights: the index's own
    assert again.embedded == 0 and again.already_indexed == 2 * PER_FAMILY
    assert again.as_dict()["index"]["photos"] == 2 * PER_FAMILY


def test_info_collections_and_photo(world):
    idx, _, _, _ = world
    info = idx.info()
    assert info.photos == 2 * PER_FAMILY and info.collections == {"rings": PER_FAMILY, "stripes": PER_FAMILY}
    assert info.stamp is not None and info.stamp["layer"] == "block5_pool" and info.stamp["weights"] == "random:0"
    assert info.index["kind"] == "flat" and "failed" not in info.as_dict()
    assert {c.name: c.photos for c in idx.collections()} == info.collections
    photo = idx.photo(1)
    assert photo.id == 1 and photo.source == "folder" and photo.state == "indexed" and photo.flagged_in == ()


def test_similar_to_a_file_its_bytes_an_id_and_a_vector(world):
    idx, photos, _, _ = world
    target = photos / "rings" / "rings_2.jpg"
    hits = idx.similar(target, k=3)
    assert all(isinstance(h, imgidx.Neighbour) for h in hits) and len(hits) == 3
    first = hits[0]
    assert first.source_id == "rings/rings_2.jpg" and first.score >= 0.999 and first.collections == ("rings",)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert idx.similar(target.read_bytes(), k=1)[0].id == first.id
    assert idx.similar(id=first.id, k=1)[0].id == first.id
    vector = idx.vectors([first.id])[0]
    assert idx.similar(vector=vector * 3.0, k=1)[0].id == first.id  # any length: normalised
    only = idx.similar(id=first.id, k=50, collection="stripes")
    assert len(only) == PER_FAMILY and all(h.collections == ("stripes",) for h in only)
    assert set(first.as_dict()) == {
        "id",
        "source_id",
        "score",
        "collections",
        "title",
        "owner",
        "license",
        "page_url",
        "path",
    }


def test_clean_apply_and_undo(world):
    idx, _, _, _ = world
    ranking = idx.clean("stripes", drop=2)
    assert isinstance(ranking, imgidx.CleanReport) and not ranking.applied
    assert [r.rank for r in ranking.rows] == list(range(1, PER_FAMILY + 1)) and len(ranking.flagged) == 2
    assert [r.distance for r in ranking.rows] == sorted(r.distance for r in ranking.rows)
    applied = idx.clean("stripes", drop=2, apply=True)
    assert applied.applied and idx.info().clean["stripes"] == PER_FAMILY - 2
    flagged = applied.flagged[0].id
    assert idx.photo(flagged).flagged_in == ("stripes",)
    within = idx.similar(id=flagged, k=50, collection="stripes")
    assert flagged not in {h.id for h in within}
    assert idx.undo_clean("stripes") >= 2 and idx.info().clean["stripes"] == PER_FAMILY


def test_audit_train_and_classify(world, tmp_path):
    idx, photos, _, _ = world
    audit = idx.audit(["stripes", "rings"], k=3)
    assert isinstance(audit, imgidx.AuditReport) and len(audit.photos) == 2 * PER_FAMILY
    trained = idx.train("shapes", ["stripes", "rings"], test_size=0.5)
    assert isinstance(trained, imgidx.TrainReport) and trained.classes == ("rings", "stripes")
    assert trained.n_train + trained.n_test == 2 * PER_FAMILY and Path(trained.path).is_file()
    [one] = idx.classify("shapes", [photos / "rings" / "rings_1.jpg"])
    assert isinstance(one, imgidx.Prediction) and one.label in trained.classes and 0.5 <= one.probability <= 1
    # the photo file goes through the index's embedder: the same label as its stored vector (random weights make
    # no good classifier, so which label is right here is the one the index's own vector gets)
    [itself] = idx.similar(photos / "rings" / "rings_1.jpg", k=1)
    [by_id] = idx.classify("shapes", ids=[itself.id])
    assert itself.score >= 0.999 and (one.label, round(one.probability, 3)) == (
        by_id.label,
        round(by_id.probability, 3),
    )
    assert one.path == str(photos / "rings" / "rings_1.jpg") and one.id is None
    stored = idx.classify("shapes", collection="rings", apply=True)
    assert len(stored) == PER_FAMILY and all(p.id is not None for p in stored)
    assert [p.id for p in idx.classify("shapes", ids=[2, 1])] == [2, 1]
    assert idx.clean("rings").classifier_label == "rings"  # clean finds the saved classifier (classifier's loader)


def test_verify_repair_and_reindex(world):
    idx, _, _, _ = world
    report = idx.verify()
    assert isinstance(report, imgidx.VerifyReport) and report.ok and idx.repair().ok
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.repaired = ("changed",)  # type: ignore[misc]
    result = idx.reindex("hnsw")
    assert isinstance(result, imgidx.ReindexReport) and result.after["kind"] == "hnsw" and result.recall_at_10 > 0.5
    assert idx.reindex("auto").after["kind"] == "flat" and idx.verify().ok


def test_errors_are_imgidx_exceptions_that_name_no_command_line_flag(world):
    idx, photos, _, _ = world
    cases = [
        (lambda: idx.similar(id=10**6), imgidx.NotFound, "no indexed photo"),
        (lambda: idx.similar(), imgidx.InvalidArgument, "exactly one"),
        (lambda: idx.similar(id=1, vector=np.ones(512)), imgidx.InvalidArgument, "exactly one"),
        (lambda: idx.similar(id=1, k=0), imgidx.InvalidArgument, "k must be"),
        (lambda: idx.similar(id=1, collection="cats"), imgidx.NotFound, "no collection 'cats'"),
        (lambda: idx.similar(vector=np.ones(7)), imgidx.InvalidArgument, "dimensions"),
        (lambda: idx.similar(b"not a photo"), imgidx.InvalidArgument, "cannot be used"),
        (lambda: idx.clean("cats"), imgidx.NotFound, "no collection"),
        (lambda: idx.clean("stripes", drop=99), imgidx.InvalidArgument, "drop"),
        (lambda: idx.audit(["stripes"]), imgidx.InvalidArgument, "two different"),
        (lambda: idx.train("../evil", ["stripes", "rings"]), imgidx.InvalidArgument, "classifier names"),
        (lambda: idx.classify("missing", ids=[1]), imgidx.NotFound, "no classifier 'missing'"),
        (lambda: idx.classify("shapes", [photos / "x.jpg"], apply=True), imgidx.InvalidArgument, "apply"),
        (lambda: idx.reindex("fastest"), imgidx.InvalidArgument, "flat|ivf|hnsw|ivfpq|auto"),
        (lambda: idx.build(imgidx.sources.Folder(photos), weights="random:1"), imgidx.StampMismatch, "random:1"),
        (lambda: idx.embedder(layer="fc2"), imgidx.StampMismatch, "fc2"),
    ]
    idx.train("shapes", ["stripes", "rings"], test_size=0.5)
    for call, error, words in cases:
        with pytest.raises(error, match=re.escape(words)) as caught:
            call()
        assert isinstance(caught.value, imgidx.ImgidxError)
        if "omit --layer/--weights" in str(caught.value):
            continue  # the Store's own stamp message: its wording goes with the store's split (storage)
        assert not re.search(r"(^|\s)--\w", str(caught.value)), str(caught.value)  # no CLI flag in the message
    assert issubclass(imgidx.InvalidArgument, ValueError) and issubclass(imgidx.NotFound, LookupError)


@pytest.mark.long  # the example builds at the default batch size: make test-long (CI runs it)
def test_the_readme_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README's Python API section has no python example"
    make_photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMGIDX_WEIGHTS", "random:0")  # offline: the example's own default is ImageNet
    exec(compile(code.group(1), "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "data" / "classifiers" / "shapes.joblib").is_file()
