"""Index kinds (indexer/ann.py) through the real Store: kind by size, reindex round trips, recall vs exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer import ann
from imgidx.indexer.errors import IndexUnavailable
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store

DIM = 32
STAMP = Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=DIM)
SMALL = ann.Policy(flat_max=300, nprobe=8, train_per_list=10)


def clustered(n: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` random centres (faiss contrib SyntheticDataset in spirit)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    v = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def as_stored(v):
    """What a new (float16) store keeps of `v`."""
    return v.astype(np.float16).astype(np.float32)


def fill(store: Store, vectors: np.ndarray, start: int = 0) -> list[int]:
    ids = store.add_photos(
        [Photo(source="folder", source_id=f"p{start + i}.jpg", collection="c") for i in range(len(vectors))]
    )
    store.add_vectors([(i, "", f"sha{i}") for i in ids], vectors)
    return ids


def recall(store: Store, queries: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    got = store.search(queries, k)
    return float(np.mean([len({h.photo_id for h in row} & set(e)) / k for row, e in zip(got, exact, strict=True)]))


def exact_top(ids: list[int], vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    return np.asarray(ids)[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home", index_policy=SMALL)
    s.ensure_stamp(STAMP)
    yield s
    s.close()


def test_kind_is_chosen_by_size():
    assert ann.choose_kind(50_000) == "flat" and ann.choose_kind(50_001) == "ivf"
    assert ann.choose_kind(301, SMALL) == "ivf" and ann.choose_kind(300, SMALL) == "flat"
    assert ann.nlist_for(1_000_000) == 4000 and ann.nlist_for(100_000) == 1264
    assert ann.nlist_for(100, SMALL) == 10  # never fewer than train_per_list training vectors per list


def test_index_grows_from_flat_into_ivf_past_the_threshold_and_stays_exact_in_sqlite(store, tmp_path):
    v = clustered(700)
    ids = fill(store, v[:250])
    store.save_index()
    assert ann.kind_of(store.index) == "flat"
    ids += fill(store, v[250:], start=250)
    store.save_index()  # the build saves every minute and at the end: that is when the kind follows the size
    assert ann.describe(store.index) == {
        "kind": "ivf",
        "size": 700,
        "storage": "float16",
        "nlist": ann.nlist_for(700, SMALL),
        "nprobe": 8,
    }
    assert np.array_equal(store.vectors(ids), as_stored(v))  # the stored vectors are untouched by the index kind
    with Store(tmp_path / "home", readonly=True) as again:
        assert ann.kind_of(again.index) == "ivf" and sorted(ann.ids_of(again.index)) == ids
        assert recall(again, v[:50], exact_top(ids, v, v[:50])) >= 0.95


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "flat"])
def test_reindex_round_trip_keeps_ids_vectors_and_recall(store, tmp_path, kind):
    v, queries = np.split(clustered(2100, seed=1), [2000])  # queries from the same clusters, not indexed
    ids = fill(store, v)
    store.rebuild_index(kind)
    with Store(tmp_path / "home", readonly=True) as again:
        assert again.index_kind == kind and ann.kind_of(again.index) == kind
        assert sorted(ann.ids_of(again.index).tolist()) == ids
        assert np.array_equal(again.vectors(ids), as_stored(v))
        r = recall(again, queries, exact_top(ids, as_stored(v), queries))
        assert r >= (1.0 if kind == "flat" else 0.95), r
        assert ann.recall_at_k(again.index, ids, again.vectors) >= 0.95


def test_a_kind_chosen_by_hand_is_kept_as_the_index_grows(store):
    fill(store, clustered(200))
    store.rebuild_index("hnsw")
    fill(store, clustered(400, seed=3), start=200)
    store.save_index()
    assert ann.kind_of(store.index) == "hnsw" and store.index.ntotal == 600
    store.rebuild_index("auto")
    assert ann.kind_of(store.index) == "ivf"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_restricted_search_stays_inside_the_collection_and_finds_its_true_neighbours(store, kind):
    v = clustered(1500, seed=4)
    ids = fill(store, v)
    store.rebuild_index(kind)
    allowed = ids[::15]  # one photo in 15: a small collection
    sub = v[::15]
    got = store.search(v[:20], 5, allowed=allowed)
    assert all(len(row) == 5 and {h.photo_id for h in row} <= set(allowed) for row in got)
    exact = exact_top(allowed, sub, v[:20], 5)
    hit = np.mean([len({h.photo_id for h in row} & set(e)) / 5 for row, e in zip(got, exact, strict=True)])
    assert hit >= 0.95


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_re_embedded_photo_replaces_its_vector_in_every_kind(store, kind):
    v = clustered(400, seed=5)
    ids = fill(store, v)
    store.rebuild_index(kind)
    new = clustered(1, seed=6)
    store.add_vectors([(ids[7], "", "sha-new")], new)
    assert store.index.ntotal == 400
    assert store.search(new, 1)[0][0].photo_id == ids[7]


def test_reopen_catches_up_an_ivf_index_after_a_crash(store, tmp_path):
    fill(store, clustered(500, seed=7))
    store.rebuild_index("ivf")
    more = fill(store, clustered(30, seed=8), start=500)  # committed, never saved
    with Store(tmp_path / "home", readonly=True) as again:
        assert again.index.ntotal == 530 and set(more) <= set(ann.ids_of(again.index).tolist())


def test_reindex_command_reports_before_after_and_recall(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGIDX_HOME", str(tmp_path / "home"))
    with Store(tmp_path / "home") as s:
        s.ensure_stamp(STAMP)
        fill(s, clustered(600, seed=9))
    runner = CliRunner()
    r = runner.invoke(app, ["reindex", "--kind", "ivf", "--json"])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["before"]["kind"] == "flat" and report["after"]["kind"] == "ivf"
    assert report["recall_at_10"] >= 0.95
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert info["index"]["kind"] == "ivf" and info["index"]["requested"] == "ivf" and info["index"]["size"] == 600
    bad = runner.invoke(app, ["reindex", "--kind", "pq"])
    assert bad.exit_code == 1 and "flat|ivf|hnsw|ivfpq|auto" in bad.stderr
    empty = runner.invoke(app, ["--home", str(tmp_path / "nothing"), "reindex"])
    assert empty.exit_code == 1 and "imgidx build" in empty.stderr


@pytest.mark.parametrize("damage", ["missing", "unreadable"])
def test_a_reader_without_a_usable_large_index_says_to_reindex_instead_of_training_one(store, damage):
    """Past flat_max a lost index means training IVF anew (minutes at a million): a read-only command could not save
    it and would pay again every time, so it says what to do; a writer rebuilds and saves it."""
    v = clustered(500)
    ids = fill(store, v)
    store.save_index()
    if damage == "missing":
        store.index_path.unlink()
    else:
        store.index_path.write_bytes(b"not a faiss index")
    reader = Store(store.home, readonly=True, index_policy=SMALL)
    try:
        with pytest.raises(IndexUnavailable, match=rf"is {damage}.*500 stored vectors.*rebuild it once with reindex"):
            reader.search(v[:1], 5)
        # a search inside a collection is answered from the stored vectors, without the index
        assert reader.search(v[:1], 1, allowed=ids[:100])[0][0].photo_id == ids[0]
        # and `info` says so instead of training one
        assert reader.describe_index() == {
            "kind": "none",
            "size": 0,
            "file": "missing or unreadable: rebuild it with reindex",
        }
        assert reader.faiss.index is None
    finally:
        reader.close()
    writer = Store(store.home, index_policy=SMALL)
    try:
        assert writer.search(v[:1], 1)[0][0].photo_id == ids[0]
        assert ann.kind_of(writer.index) == "ivf"
        writer.save_index()
        assert store.index_path.exists()
    finally:
        writer.close()
    reader = Store(store.home, readonly=True, index_policy=SMALL)
    try:
        assert reader.search(v[:1], 1)[0][0].photo_id == ids[0]
    finally:
        reader.close()


def test_a_reader_rebuilds_a_small_lost_index_in_memory(store):
    v = clustered(200)
    ids = fill(store, v)
    store.save_index()
    store.index_path.unlink()
    reader = Store(store.home, readonly=True, index_policy=SMALL)
    try:
        assert reader.search(v[3:4], 1)[0][0].photo_id == ids[3]
    finally:
        reader.close()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_a_one_off_search_maps_the_saved_index_and_answers_as_the_loaded_one(store, tmp_path, kind):
    """A search on a store whose index is not loaded (a command's one search, clean's probe) maps the saved file
    instead of reading it: same answers as the loaded index; an index the file does not hold all of (a build not
    saved yet) is loaded and caught up as before."""
    v = clustered(ann.PQ_TRAIN + 100 if kind == "ivfpq" else 1500, seed=7)
    ids = fill(store, v)
    store.rebuild_index(kind)
    home = tmp_path / "home"
    with Store(home, readonly=True) as once, Store(home, readonly=True) as loaded:
        assert ann.kind_of(loaded.index) == kind
        assert once.search(v[:30], 7) == loaded.search(v[:30], 7)
        assert once.faiss.index is None  # nothing loaded into memory
    new = clustered(5, seed=8)
    new_ids = fill(store, new, start=len(ids))  # committed, not in the saved file yet
    with Store(home, readonly=True) as once:
        got = once.search(new, 1)
        assert [row[0].photo_id for row in got] == new_ids and once.faiss.index is not None


def test_describing_the_index_maps_a_current_file_and_catches_up_a_lagging_one(store, tmp_path):
    fill(store, clustered(400, seed=3))
    store.rebuild_index("ivf")
    with Store(tmp_path / "home", readonly=True, index_policy=SMALL) as reader:
        assert reader.describe_index() == ann.describe(ann_file := reader.faiss.read_file()) and ann_file.ntotal == 400
        assert reader.faiss.index is None  # described from the mapped file, not loaded
    fill(store, clustered(20, seed=4), start=400)  # committed, never saved: the file lags
    with Store(tmp_path / "home", readonly=True, index_policy=SMALL) as reader:
        assert reader.describe_index()["size"] == 420


def test_info_and_reindex_of_a_small_home_whose_index_file_is_gone(tmp_path, monkeypatch):
    """Below flat_max a reader searches a flat index made in memory: info describes that one and saves nothing."""
    home = tmp_path / "home"
    with Store(home) as s:
        s.ensure_stamp(STAMP)
        fill(s, clustered(60, seed=5))
        s.save_index()
    (home / "index" / "faiss.index").unlink()
    monkeypatch.setenv("IMGIDX_HOME", str(home))
    runner = CliRunner()
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert info["index"]["kind"] == "flat" and info["index"]["size"] == 60
    assert not (home / "index" / "faiss.index").exists()
    result = runner.invoke(app, ["reindex", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["before"]["kind"] == "flat" and report["after"]["kind"] == "flat" and report["after"]["size"] == 60
    assert (home / "index" / "faiss.index").exists()
