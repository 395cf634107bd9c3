"""The vector file (store/vectorfile.py): its format, the schema-3 move of an older store's BLOBs (and a crash in
the middle of it), float16's error bound, and the IVF-PQ kind that holds a million photos. Small N, real files."""

from __future__ import annotations

import json
import sqlite3
from functools import partialmethod
from pathlib import Path

import numpy as np
import pytest

from imgidx.cli.console import hint
from imgidx.indexer import ann
from imgidx.indexer.errors import VectorsLost
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store, schema, vectorfile
from imgidx.indexer.store.catalog import Catalog
from imgidx.indexer.store.vectorfile import VectorFile, cosine_error
from imgidx.indexer.verify import verify

STAMP = Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=8)


def unit(n, d=8, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_rows_are_fixed_size_at_their_slot_and_read_in_any_order(tmp_path):
    vf = VectorFile(tmp_path / "vectors.bin", 8, "float16")
    v = unit(5)
    vf.write(0, vf.encode(v[:3]))
    vf.write(3, vf.encode(v[3:]))
    assert (tmp_path / "vectors.bin").stat().st_size == 5 * 8 * 2 and vf.rows() == 5
    raw = np.fromfile(tmp_path / "vectors.bin", dtype=np.float16).reshape(5, 8)
    assert np.array_equal(raw, v.astype(np.float16))  # no header: row i at i * dim * 2
    assert np.array_equal(vf.read([4, 0, 2]), v[[4, 0, 2]].astype(np.float16).astype(np.float32))
    vf.write(2, vf.encode(v[:1]))  # a write cuts whatever lies after it (an uncommitted tail)
    assert vf.rows() == 3
    with pytest.raises(VectorsLost, match="cut short; repair the store") as lost:
        vf.read([4])
    assert "--" not in str(lost.value)  # the library names no command line flag; the CLI adds its own
    assert hint(lost.value) == " with `imgidx verify --repair`"


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_reads_through_a_small_buffer_give_every_row_in_the_callers_order(tmp_path, monkeypatch, dtype):
    """Runs longer than the read buffer, runs split across buffers, scattered rows, repeats, any order."""
    vf = VectorFile(tmp_path / "vectors.bin", 8, dtype)
    v = unit(300, seed=3)
    vf.write(0, vf.encode(v))
    stored = v.astype(dtype).astype(np.float32)
    rng = np.random.default_rng(4)
    wanted = [
        list(range(300)),
        list(range(299, -1, -1)),
        rng.permutation(300)[:123].tolist(),
        [*range(10, 60), *range(100, 101), *range(140, 290)] + [7, 7, 12, 299, 0],
        [5],
    ]
    for chunk in (1, 7, 64, 512):
        monkeypatch.setattr(vectorfile, "READ_CHUNK_ROWS", chunk)
        for slots in wanted:
            assert vf.read(slots).tobytes() == stored[slots].tobytes()
    monkeypatch.setattr(vectorfile, "READ_CHUNK_ROWS", 7)
    with pytest.raises(VectorsLost, match="cut short; repair the store"):
        vf.read([*range(290, 300), 300, 301])


def _v2_store(home: Path, vectors: np.ndarray) -> None:
    """A store as imgidx wrote it before the vector file: schema 2, float32 BLOBs in SQLite."""
    home.mkdir(parents=True)
    db = sqlite3.connect(home / "imgidx.sqlite")
    db.executescript(schema.SCHEMA + schema.MIGRATIONS[2])
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    db.execute("INSERT INTO meta VALUES ('stamp', ?)", (json.dumps(STAMP.as_dict()),))
    for i, v in enumerate(vectors, start=1):
        db.execute(
            "INSERT INTO photos (id, source, source_id, path, state, added_at, updated_at) "
            "VALUES (?, 'flickr', ?, ?, 'indexed', 0, 0)",
            (i, str(100 + i), f"p{i}.jpg"),
        )
        db.execute("INSERT INTO collections (name, photo_id, added_at) VALUES ('cat', ?, 0)", (i,))
        db.execute("INSERT INTO vectors VALUES (?, ?)", (i, v.tobytes()))
    db.execute(
        "INSERT INTO photos (id, source, source_id, state, added_at, updated_at) VALUES (99, 'flickr', 'x', "
        "'indexed', 0, 0)"
    )
    db.execute("INSERT INTO vectors VALUES (99, ?)", (b"\0" * 12,))  # unusable: dropped, re-embedded later
    db.commit()
    db.close()


@pytest.mark.parametrize("first", ["writer", "reader"])
def test_an_older_store_moves_its_blobs_to_a_float32_file_bit_for_bit(tmp_path, first):
    home, v = tmp_path / "home", unit(7)
    _v2_store(home, v)
    with Store(home, readonly=first == "reader") as s:  # a reader (the service) migrates through a short writer
        assert s.vector_dtype == "float32"  # kept: its index and a resumed build stay what they were
        assert s.vectors([1, 2, 3, 4, 5, 6, 7]).tobytes() == v.tobytes()
        assert s.states([99]) == {99: "found"} and not s.has_vector(99)
        assert s.meta("schema_version") == "3" and not schema.has_blobs(s.db)
    assert (home / "vectors.bin").stat().st_size == 7 * 8 * 4
    with Store(home) as s:  # new vectors of that store are float32 too
        [pid] = s.add_photos([Photo("flickr", "500", "cat")])
        s.add_vectors([(pid, "", "")], unit(1, seed=3))
        assert s.vectors([pid]).tobytes() == unit(1, seed=3).tobytes()
        s.save_index()
    with Store(home, readonly=True) as s, s.snapshot():
        assert verify(s).ok


def test_a_migration_killed_between_batches_resumes_without_loss_or_duplicates(tmp_path, monkeypatch):
    home, v = tmp_path / "home", unit(7)
    _v2_store(home, v)
    calls = []
    real_write = VectorFile.write

    def dies_on_the_second_batch(self, start, rows):
        calls.append(start)
        real_write(self, start, rows)
        if len(calls) == 2:  # its rows reached the file; the process dies before the commit
            raise KeyboardInterrupt

    monkeypatch.setattr(VectorFile, "write", dies_on_the_second_batch)
    monkeypatch.setattr(Catalog, "_move_blobs", partialmethod(Catalog._move_blobs, batch=3))
    with pytest.raises(KeyboardInterrupt):
        Store(home)
    with sqlite3.connect(home / "imgidx.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 3  # the first batch committed
        assert db.execute("SELECT COUNT(*) FROM vector_blobs").fetchone()[0] == 5
    assert (home / "vectors.bin").stat().st_size == 6 * 8 * 4  # and a tail nobody committed
    monkeypatch.undo()
    with Store(home) as s:
        assert s.vector_ids() == [1, 2, 3, 4, 5, 6, 7] and s.committed_slots() == 7
        assert s.vectors(list(range(1, 8))).tobytes() == v.tobytes()
    assert (home / "vectors.bin").stat().st_size == 7 * 8 * 4


def test_float16_storage_error_is_far_below_the_promised_bound():
    """Measured on real fc2 vectors (random:0 weights) and on clustered fc2-like ones: storing float16 changes a
    unit vector's cosine to itself by ~1e-7 and a cosine between two vectors by < 1e-4 (bound: 1e-3)."""
    real = np.load(Path(__file__).parent / "data" / "fc2_random0_reference.npy")
    rng = np.random.default_rng(0)
    centres = np.maximum(rng.standard_normal((20, 4096)), 0)
    fake = np.maximum(centres[rng.integers(0, 20, 500)] + rng.standard_normal((500, 4096)) * 0.6, 0)
    fake = (fake / np.linalg.norm(fake, axis=1, keepdims=True)).astype(np.float32)
    for v in (real, fake):
        err = cosine_error(v)
        assert err["max_self"] < 1e-6 and err["max_pair"] < 1e-4, err
    assert cosine_error(fake, "float32") == {"max_self": pytest.approx(0, abs=1e-7), "max_pair": 0.0}
    assert vectorfile.DEFAULT_DTYPE == "float16"


def test_auto_kinds_follow_the_memory_budget():
    assert [ann.choose_kind(n) for n in (10_000, 200_000, 1_000_000)] == ["flat", "ivf", "ivfpq"]
    assert ann.pq_bytes(4096) == 128 and ann.pq_bytes(100) == 2  # a divisor of the dimension


def test_ivfpq_recall_after_reranking_and_verify(tmp_path):
    """A product-quantized index alone ranks poorly at these code sizes; its candidates re-ranked with the stored
    vectors find the exact neighbours (as `reindex` reports)."""
    d, n = 32, 10_000
    rng = np.random.default_rng(0)
    centres = np.maximum(rng.standard_normal((40, d)), 0) * 1.5
    v = np.maximum(centres[rng.integers(0, 40, n)] + rng.standard_normal((n, d)) * 0.6, 0).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    policy = ann.Policy(flat_max=1_000, ivf_memory=0, pq_dims=4, pq_nlist_max=32, train_iterations=5)  # 16-byte codes
    with Store(tmp_path / "home", index_policy=policy) as s:
        s.ensure_stamp(Stamp(model="vgg16", layer="fc2", weights="random:0", dim=d))
        ids = s.add_photos([Photo("folder", f"{i}.jpg", f"c{i % 3}") for i in range(n)])
        s.insert_vectors([(i, "", "") for i in ids], v)
        s.rebuild_index("auto")
        assert ann.describe(s.index)["kind"] == "ivfpq" and ann.describe(s.index)["storage"] == "pq8x8"
        recall = ann.recall_at_k(s.index, s.vector_ids(), s.vectors)
        assert recall >= 0.95, recall
        hit = s.search(s.vectors([ids[7]]), 3)[0][0]
        assert hit.photo_id == ids[7] and hit.score == pytest.approx(1.0, abs=1e-3)  # exact score, not PQ's
        # many queries re-ranked from shared reads (in groups under a row cap) == each query on its own
        queries = s.vectors(ids[:40])
        alone = [s.search(q[None], 5)[0] for q in queries]
        import imgidx.indexer.store as store_module

        for cap in (store_module.RERANK_READ_ROWS, 600, 1):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(store_module, "RERANK_READ_ROWS", cap)
                assert s.search(queries, 5) == alone
    with Store(tmp_path / "home", readonly=True) as s, s.snapshot():
        report = verify(s)
        assert report.ok and not report.findings, report.as_dict()


def test_clean_scores_against_the_nearest_collections_when_all_would_not_fit(tmp_path, monkeypatch):
    """At a million photos clean cannot load every other collection: beyond the budget, the index picks those
    where this collection's neighbours are."""
    from imgidx.search import outliers

    rng = np.random.default_rng(0)
    centres = {"a": 0, "b": 0, "c": 1, "d": 2}  # b shares a's centre: the only collection that matters to a
    axes = np.eye(8, dtype=np.float32) * 3
    with Store(tmp_path / "home") as s:
        s.ensure_stamp(STAMP)
        for name, c in centres.items():
            ids = s.add_photos([Photo("folder", f"{name}{i}.jpg", name) for i in range(10)])
            v = axes[c] + rng.normal(size=(10, 8)).astype(np.float32) * 0.3
            s.add_vectors([(i, "", "") for i in ids], v / np.linalg.norm(v, axis=1, keepdims=True))
        s.save_index()
        own = s.vector_ids("a")
        assert outliers._other_collections(s, "a", own) == ["b", "c", "d"]  # all fit: all of them
        monkeypatch.setattr(outliers, "OTHERS_BUDGET", 10)
        assert outliers._other_collections(s, "a", own) == ["b"]
        assert set(outliers.index_inputs(s, "a", classifier=None)["others"]) == {"b"}
        monkeypatch.undo()
        # with the collection's ids: its vectors and the others', read into consecutive rows of one array
        inputs = outliers.index_inputs(s, "a", classifier=None, ids=own)
        alone = outliers.index_inputs(s, "a", classifier=None)
        assert inputs["vectors"].tobytes() == s.vectors(own).tobytes()
        assert {n: v.tobytes() for n, v in inputs["others"].items()} == {
            n: v.tobytes() for n, v in alone["others"].items()
        }
        parts = [inputs["vectors"], *inputs["others"].values()]
        assert outliers._consecutive(parts) is not None
        assert outliers._consecutive(parts).tobytes() == np.concatenate(parts).tobytes()


def test_read_into_rows_of_a_larger_array(tmp_path):
    vf = VectorFile(tmp_path / "vectors.bin", 8, "float16")
    v = unit(20, seed=5)
    vf.write(0, vf.encode(v))
    rows = np.full((30, 8), np.nan, dtype=np.float32)
    assert vf.read([3, 1, 19], out=rows[10:13]) is not None
    assert rows[10:13].tobytes() == vf.read([3, 1, 19]).tobytes()
    assert np.isnan(rows[:10]).all() and np.isnan(rows[13:]).all()
    for bad in (rows[:2], rows[:3].astype(np.float64), rows[:6:2], np.zeros((3, 8), np.float32).T.copy().T):
        with pytest.raises(ValueError, match="out must be a C-contiguous float32 array of shape"):
            vf.read([3, 1, 19], out=bad)
