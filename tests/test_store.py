"""Store: real SQLite + FAISS files. Stamps, dedupe, exact vectors, crash catch-up, atomic saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgidx.indexer.errors import StampMismatch, StoreError
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store

STAMP = Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=8)


def unit(rng, n, d=8):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def photo(i, collection="cat", source="flickr"):
    return Photo(source=source, source_id=str(1000 + i), collection=collection, title=f"t{i}", url=f"http://x/{i}")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home")
    s.ensure_stamp(STAMP)
    yield s
    s.close()


def test_photo_found_by_two_queries_is_stored_once_in_both_collections(store):
    a = store.add_photos([photo(1, "cat"), photo(2, "cat")])
    b = store.add_photos([photo(2, "kitten"), photo(3, "kitten")])
    assert a[1] == b[0]
    assert store.collections_of([a[1]]) == {a[1]: ["cat", "kitten"]}
    assert store.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == 3


def test_vectors_round_trip_as_float16_and_search_finds_itself(store):
    rng = np.random.default_rng(0)
    ids = store.add_photos([photo(i) for i in range(20)])
    vecs = unit(rng, 20)
    store.add_vectors([(i, f"p{i}", f"sha{i}") for i in ids], vecs)
    assert store.vector_dtype == "float16"  # a new store's default (README "A million photos")
    assert np.array_equal(store.vectors(ids[::-1]), vecs[::-1].astype(np.float16).astype(np.float32))
    hits = store.search(vecs[:3], 2)
    assert [h[0].photo_id for h in hits] == ids[:3]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)  # float16 rounding moves |v| by < 1e-3


def test_search_restricted_to_allowed_ids(store):
    rng = np.random.default_rng(1)
    ids = store.add_photos([photo(i) for i in range(10)])
    vecs = unit(rng, 10)
    store.add_vectors([(i, "", f"s{i}") for i in ids], vecs)
    hits = store.search(vecs[:1], 5, allowed=ids[5:])[0]
    assert {h.photo_id for h in hits} <= set(ids[5:]) and len(hits) == 5


def test_stamp_mismatch_is_refused_with_both_stamps_named(store):
    other = Stamp(model="vgg16", layer="fc2", weights="random:0", dim=4096)
    with pytest.raises(StampMismatch, match="block5_pool.*fc2"):
        store.ensure_stamp(other)


def test_reopen_catches_up_vectors_committed_after_the_last_index_save(tmp_path):
    rng = np.random.default_rng(2)
    with Store(tmp_path) as s:
        s.ensure_stamp(STAMP)
        ids = s.add_photos([photo(i) for i in range(6)])
        s.add_vectors([(i, "", f"a{i}") for i in ids[:3]], unit(rng, 3))
        s.save_index()
        s.add_vectors([(i, "", f"b{i}") for i in ids[3:]], unit(rng, 3))  # "crash": never saved
    with Store(tmp_path, readonly=True) as s:
        assert s.index.ntotal == 6
        assert sorted(s.search(s.vectors(ids[3:4]), 1)[0][0].photo_id for _ in [0]) == [ids[3]]


def test_index_entries_without_metadata_are_dropped_on_open(tmp_path):
    import faiss

    rng = np.random.default_rng(3)
    with Store(tmp_path) as s:
        s.ensure_stamp(STAMP)
        ids = s.add_photos([photo(i) for i in range(3)])
        s.add_vectors([(i, "", f"c{i}") for i in ids], unit(rng, 3))
        s.index.add_with_ids(unit(rng, 1), np.array([999], dtype=np.int64))  # an orphan vector
        s.save_index()
    with Store(tmp_path, readonly=True) as s:
        assert sorted(faiss.vector_to_array(s.index.id_map).tolist()) == sorted(ids)


def test_corrupt_index_file_is_rebuilt_from_stored_vectors(tmp_path):
    rng = np.random.default_rng(4)
    with Store(tmp_path) as s:
        s.ensure_stamp(STAMP)
        ids = s.add_photos([photo(i) for i in range(4)])
        s.add_vectors([(i, "", f"d{i}") for i in ids], unit(rng, 4))
        s.save_index()
    (tmp_path / "index" / "faiss.index").write_bytes(b"garbage")
    with Store(tmp_path, readonly=True) as s:
        assert s.index.ntotal == 4


def test_save_is_atomic_and_marks_photos_indexed(store):
    rng = np.random.default_rng(5)
    ids = store.add_photos([photo(i) for i in range(2)])
    store.add_vectors([(i, "", f"e{i}") for i in ids], unit(rng, 2))
    assert store.counts()["states"] == {"embedded": 2}
    store.save_index()
    assert store.counts()["states"] == {"indexed": 2}
    assert not list(store.index_path.parent.glob("*.tmp"))


def test_identical_bytes_reuse_the_stored_vector(store):
    rng = np.random.default_rng(6)
    ids = store.add_photos([photo(1)])
    v = unit(rng, 1)
    store.add_vectors([(ids[0], "", "same-sha")], v)
    assert np.array_equal(store.vector_for_sha256("same-sha"), v[0].astype(np.float16).astype(np.float32))
    assert store.vector_for_sha256("other") is None


def test_newer_schema_is_refused(tmp_path):
    with Store(tmp_path) as s, s.db:
        s.db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer than this imgidx"):
        Store(tmp_path)


def test_readonly_open_of_missing_index_says_to_build(tmp_path):
    with pytest.raises(StoreError, match="build one first"):
        Store(tmp_path / "nothing", readonly=True)


def test_sql_text_from_remote_is_stored_verbatim(store):
    evil = Photo(source="flickr", source_id="42", collection="x'); DROP TABLE photos; --", title="'; DELETE --")
    [pid] = store.add_photos([evil])
    assert store.photo_rows([pid])[pid]["title"] == "'; DELETE --"
    assert store.collection_names() == ["x'); DROP TABLE photos; --"]


def fill_disk(store) -> None:
    """A real full disk as SQLite sees it: the database may not grow by a single page (SQLITE_FULL)."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


@pytest.mark.parametrize("write", ["set_flags", "clear_flags", "save_predictions", "add_photos", "set_meta"])
def test_every_write_on_a_full_disk_is_one_clear_store_error(store, write):
    ids = store.add_photos([photo(i) for i in range(3)])
    store.set_flags("cat", {i: {"z": 1.0} for i in ids}, {ids[0]})  # clear_flags then has rows to change
    fill_disk(store)
    big = "x" * 20_000  # more than the free space of any page: the write must grow the file
    calls = {
        "set_flags": lambda: store.set_flags("cat", {i: {"why": big} for i in ids}, set(ids)),
        "clear_flags": lambda: (store.db.execute("PRAGMA query_only = ON"), store.clear_flags("cat")),
        "save_predictions": lambda: store.save_predictions(big, [(i, big, 0.5) for i in ids]),
        "add_photos": lambda: store.add_photos([photo(i, collection=big) for i in range(10, 40)]),
        "set_meta": lambda: store.set_meta("note", big),
    }
    with pytest.raises(StoreError) as e:
        calls[write]()
    message = str(e.value)
    assert "\n" not in message and str(store.db_path) in message
    assert "everything committed so far is kept" in message
    if write == "clear_flags":  # read-only (query_only): says so, not "full"
        assert "readonly" in message and "writable" in message
    else:
        assert "database or disk is full" in message and "looks full" in message and "free some space" in message
    store.db.execute("PRAGMA query_only = OFF")
    assert store.db.execute("SELECT COUNT(*) FROM collections WHERE flagged=1").fetchone()[0] == 1  # rolled back


def test_photo_layout_keeps_numeric_ids_and_hashes_any_other(tmp_path):
    from imgidx.indexer import atomic, layout

    assert layout.photo_file(tmp_path, "flickr", "12345", "jpg") == tmp_path / "photos/flickr/45/12345.jpg"
    assert layout.photo_file(tmp_path, "flickr", "7", "png") == tmp_path / "photos/flickr/07/7.png"
    for hostile in ("../../etc/passwd", "https://x.test/a b.jpg?q=1", "é" * 300, "/abs", ""):
        f = layout.photo_file(tmp_path, "urllist", hostile, "jpg")
        assert f.parent.parent == tmp_path / "photos" / "urllist" and len(f.name) < 40 and f.name.startswith("h")
    assert layout.file_stem("a") != layout.file_stem("b")
    with pytest.raises(ValueError):
        layout.photo_folder(tmp_path, "../x", "1")
    target = layout.photo_file(tmp_path, "urllist", "https://x.test/1.jpg", "jpg")
    atomic.write_bytes(target, b"data")
    assert layout.existing_photo(tmp_path, "urllist", "https://x.test/1.jpg") == target
    assert atomic.is_temp(atomic.temp_path(target)) and not atomic.is_temp(target)
    assert layout.stored_path(tmp_path, target).startswith("photos/") and layout.is_download("photos/x/1.jpg")
    assert layout.local_file(tmp_path, "/abs/p.jpg") == Path("/abs/p.jpg")


def test_collection_names_are_every_distinct_name_in_sql_order(tmp_path):
    with Store(tmp_path / "home") as store:
        assert store.collection_names() == []
        names = ["b", "a", "B", "é", "a b", "a", "", "Z", "b"]
        store.add_photos([Photo("folder", f"{i}.jpg", name) for i, name in enumerate(names)])
        sql = [r[0] for r in store.db.execute("SELECT DISTINCT name FROM collections ORDER BY name")]
        assert store.collection_names() == sql == sorted(set(names), key=lambda n: n.encode())
