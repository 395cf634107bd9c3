"""`imgidx verify` finds each way index, metadata and files can disagree; `--repair` fixes what stored vectors and
files allow. Also the crash and disk-full paths of the store and the loader. Real SQLite + FAISS, no model."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer import ann, pipeline
from imgidx.indexer.compose import build_lock
from imgidx.indexer.errors import StoreError
from imgidx.indexer.fetch import Download
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store, faiss_index
from imgidx.indexer.verify import repair, verify

STAMP = Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=8)
runner = CliRunner()


def unit(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A healthy home: 6 downloaded photos with files, vectors and a saved index."""
    home = tmp_path / "home"
    monkeypatch.setenv("IMGIDX_HOME", str(home))
    with Store(home) as s:
        s.ensure_stamp(STAMP)
        ids = s.add_photos(Photo("flickr", str(100 + i), "cat", url=f"http://x/{i}") for i in range(6))
        items = []
        for pid in ids:
            rel = f"photos/flickr/{pid:02d}/{100 + pid}.jpg"
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            data = f"jpeg {pid}".encode()
            (home / rel).write_bytes(data)
            items.append((pid, rel, hashlib.sha256(data).hexdigest()))
        s.add_vectors(items, unit(6))
        s.save_index()
    return home


def check(home):
    with Store(home, readonly=True) as s, s.snapshot():
        return verify(s)


def kinds(report):
    return {f.kind for f in report.findings}


def fix(home):
    with build_lock(home), Store(home) as s:
        done = repair(s, verify(s))
    after = check(home)
    assert after.ok and not [f for f in after.findings if f.error], after.as_dict()
    return done


def cli(*args):
    return runner.invoke(app, ["verify", *args])


def test_a_healthy_home_verifies_ok(home):
    report = check(home)
    assert (
        report.ok
        and report.findings == ()
        and report.checked
        == {
            "vector_file": {"dtype": "float16", "rows": 6, "committed": 6},
            "index_size": 6,
            "files": 6,
            "photos": 6,
            "vectors": 6,
        }
    )
    r = cli()
    assert r.exit_code == 0 and r.stdout.startswith("ok: index, metadata and files agree")


def test_vectors_committed_after_the_last_save_are_reported_then_repaired(home):
    with Store(home) as s:
        [pid] = s.add_photos([Photo("flickr", "999", "cat")])
        s.add_vectors([(pid, "", "")], unit(1, seed=9))  # a crash before the next save
    assert kinds(check(home)) == {"index_behind"}
    r = cli("--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["problems"][0]["examples"] == [pid]
    r = cli("--repair")
    assert r.exit_code == 0 and "rebuilt index/faiss.index from 7 stored vectors" in r.stderr
    assert cli().exit_code == 0


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_a_missing_or_unreadable_index_file_is_rebuilt(home, damage):
    path = home / "index" / "faiss.index"
    path.unlink() if damage == "delete" else path.write_bytes(b"not faiss")
    assert kinds(check(home)) == {"index_missing"}
    fix(home)


def test_orphans_duplicates_and_changed_vectors_in_the_index_file(home):
    index = faiss_index.read_index(home / "index" / "faiss.index")
    index.add_with_ids(unit(1, seed=3), np.array([777], dtype=np.int64))  # no metadata
    index.add_with_ids(unit(1, seed=4), np.array([2], dtype=np.int64))  # id 2 twice, with another vector
    faiss_index.write_atomic(index, home / "index" / "faiss.index")
    assert kinds(check(home)) == {"index_orphans", "index_duplicates", "index_vector_differs"}
    fix(home)
    with Store(home, readonly=True) as s:
        assert s.index.ntotal == 6 and s.search(s.vectors([2]), 1)[0][0].photo_id == 2


def test_states_that_disagree_with_stored_vectors(home):
    with sqlite3.connect(home / "imgidx.sqlite") as db:
        db.execute("DELETE FROM vectors WHERE photo_id=1")  # marked indexed, but no vector
        db.execute("UPDATE photos SET state='found' WHERE id=2")  # a vector, but marked found
        db.execute("UPDATE photos SET state='embedded' WHERE id=3")  # killed between save and state update
    assert kinds(check(home)) >= {"photo_without_vector", "state_behind_vector", "state_behind_index"}
    fix(home)
    with Store(home, readonly=True) as s:
        states = s.states([1, 2, 3])
    assert states == {1: "downloaded", 2: "indexed", 3: "indexed"}  # 1 is re-embedded from its file by a build


def test_unusable_vectors_and_dangling_rows_are_dropped(home):
    rows = np.memmap(home / "vectors.bin", dtype=np.float16, mode="r+", shape=(6, 8))
    rows[1] = np.nan  # photo 2's vector (slot 1) is garbage
    rows.flush()
    del rows
    with open(home / "vectors.bin", "ab") as f:
        f.write(unit(1)[0].astype(np.float16).tobytes())  # slot 6, for a vector without a photo
    with sqlite3.connect(home / "imgidx.sqlite") as db:
        db.execute("UPDATE vectors SET slot=99 WHERE photo_id=1")  # beyond the end of the file (cut short)
        db.execute("INSERT INTO vectors VALUES (55, 6)")  # no photo row (FKs off here)
        db.execute("INSERT INTO collections (name, photo_id, query, rank, added_at) VALUES ('dog', 56, '', 0, 0)")
    assert kinds(check(home)) >= {
        "vector_missing",
        "vector_not_unit",
        "vector_without_photo",
        "collection_without_photo",
    }
    fix(home)
    with Store(home, readonly=True) as s:
        assert s.vector_ids() == [3, 4, 5, 6] and s.states([1, 2]) == {1: "downloaded", 2: "downloaded"}


def test_a_killed_append_leaves_a_tail_that_is_reported_then_overwritten_or_cut(home):
    """A build killed after fsyncing its vectors but before committing their slots: nobody reads the tail; the
    next append writes over it, and a repair cuts it."""
    tail = unit(3, seed=9).astype(np.float16).tobytes()
    with open(home / "vectors.bin", "ab") as f:
        f.write(tail + b"half a row")
    report = check(home)
    assert kinds(report) == {"vector_file_tail"} and report.ok  # a warning: nothing committed points there
    fix(home)
    assert (home / "vectors.bin").stat().st_size == 6 * 8 * 2
    with open(home / "vectors.bin", "ab") as f:
        f.write(tail)
    with Store(home) as s:
        [pid] = s.add_photos([Photo("flickr", "999", "cat")])
        s.add_vectors([(pid, "", "")], unit(1, seed=5))
        assert s.committed_slots() == 7 and s.slots([pid]) == {pid: 6}  # written where the tail was
        assert np.array_equal(s.vectors([pid]), unit(1, seed=5).astype(np.float16).astype(np.float32))
    assert (home / "vectors.bin").stat().st_size == 7 * 8 * 2


def test_files_missing_changed_stale_and_unrecorded(home):
    (home / "photos/flickr/01/101.jpg").unlink()  # vector still works: a warning
    (home / "photos/flickr/02/102.jpg").write_bytes(b"something else")  # not what was embedded: an error
    (home / "photos/flickr/03/.103.jpg.1.2.tmp").write_bytes(b"half")  # a killed download
    (home / "index/.faiss.index.9.tmp").write_bytes(b"half")  # a killed save
    (home / "photos/flickr/04/555.jpg").write_bytes(b"not recorded yet")
    report = check(home)
    by_kind = {f.kind: f for f in report.findings}
    assert set(by_kind) == {"file_missing", "file_changed", "temp_files", "file_without_photo"}
    assert not by_kind["file_missing"].error and not by_kind["file_without_photo"].error
    assert len(by_kind["temp_files"].ids) == 2
    fix(home)
    assert not (home / "photos/flickr/02/102.jpg").exists() and not list(home.rglob("*.tmp"))
    assert (home / "photos/flickr/04/555.jpg").exists()  # a later build may still use it


@pytest.mark.parametrize("where", ["header pages", "last page"])
def test_a_corrupt_database_is_reported_not_repaired(home, where):
    db = home / "imgidx.sqlite"
    data = bytearray(db.read_bytes())
    if where == "header pages":
        data[4096 * 2 : 4096 * 4] = b"\xff" * 8192  # the schema's b-trees: cannot even open it
    else:  # a data page (the vectors table's; the last page may be an empty table's): opens, fails the check
        with sqlite3.connect(db) as con:
            page = con.execute("SELECT rootpage FROM sqlite_master WHERE name='vectors'").fetchone()[0]
        con.close()
        start = 4096 * (page - 1)
        data[start + 8 : start + 4096] = b"\xff" * (4096 - 8)
    db.write_bytes(bytes(data))
    for args in ([], ["--repair"]):
        r = cli(*args)
        assert r.exit_code == 1, r.stdout
        assert "sqlite_corrupt" in r.stdout or (r.stderr.startswith("error: cannot open") and ".recover" in r.stderr)


KILLED_WRITER = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=DELETE")  # a rollback journal, as in a new home's switch to WAL
db.execute("PRAGMA cache_size=10")  # small: the transaction spills into the database file before its commit
db.execute("BEGIN")
db.execute("UPDATE photos SET title='half-written'")
db.execute("CREATE TABLE junk AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<400) "
           "SELECT randomblob(20000) FROM c")
os._exit(9)  # SIGKILL's effect: no rollback, no unlock, the journal stays hot
"""


def test_a_writer_killed_mid_transaction_leaves_a_home_that_reads_as_its_last_commit(home, monkeypatch):
    """A hot journal makes every read-only SQLite connection fail (SQLITE_READONLY_ROLLBACK): verify, similar and the
    service open read-only, so the store finishes the rollback itself, as any SQLite writer would."""
    import subprocess
    import sys

    db = home / "imgidx.sqlite"
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], check=False)
    assert (home / "imgidx.sqlite-journal").stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError) as plain:  # what a bare read-only open meets: the state is real
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM photos").fetchone()
    assert plain.value.sqlite_errorname == "SQLITE_READONLY_ROLLBACK"
    with monkeypatch.context() as m:  # a home this user cannot write (root ignores permissions: os.access stands in)
        m.setattr("os.access", lambda *a, **k: False)
        with pytest.raises(StoreError, match="killed in the middle of a transaction.*nothing committed is lost"):
            Store(home, readonly=True)
    assert (home / "imgidx.sqlite-journal").exists()  # left for a user who can write there
    r = cli("--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["problems"] == [], r.stdout + r.stderr
    assert not (home / "imgidx.sqlite-journal").exists()
    with Store(home, readonly=True) as s:  # the last commit, not the half-written transaction
        assert [r[0] for r in s.db.execute("SELECT DISTINCT title FROM photos")] == [""]
        assert s.counts()["states"] == {"indexed": 6}
        assert not s.db.execute("SELECT 1 FROM sqlite_master WHERE name='junk'").fetchone()


def test_repair_refuses_while_a_build_holds_the_lock(home):
    with build_lock(home):
        r = cli("--repair")
    assert r.exit_code == 1 and "another imgidx build" in r.stderr


def test_verify_of_a_home_without_an_index_says_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGIDX_HOME", str(tmp_path / "empty"))
    r = cli()
    assert r.exit_code == 1 and "imgidx build" in r.stderr and not (tmp_path / "empty").exists()


def test_a_restart_marks_embedded_photos_indexed_even_with_nothing_to_do(home):
    with sqlite3.connect(home / "imgidx.sqlite") as db:
        db.execute("UPDATE photos SET state='embedded'")  # killed after the rename, before the state update
    with Store(home) as s:
        s.save_index()
        assert s.counts()["states"] == {"indexed": 6}


def test_a_failed_index_save_is_one_clear_error_and_keeps_the_old_file(home, monkeypatch):
    import faiss

    before = (home / "index" / "faiss.index").read_bytes()

    def full(index, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("Error: 'ret == (size * 4)' failed: write error in x: 3 != 8 (File too large)")

    monkeypatch.setattr(faiss, "write_index", full)
    with Store(home) as s:
        [pid] = s.add_photos([Photo("flickr", "999", "cat")])
        s.add_vectors([(pid, "", "")], unit(1, seed=9))
        with pytest.raises(StoreError, match="looks full.*everything committed so far is kept"):
            s.save_index()
    assert (home / "index" / "faiss.index").read_bytes() == before and not list(home.rglob("*.tmp"))
    monkeypatch.undo()
    with Store(home, readonly=True) as s:
        assert s.index.ntotal == 7  # caught up from SQLite


class OneFileFetcher:
    workers = 2

    def fetch(self, url):
        return Download(index_file_jpeg())


def index_file_jpeg() -> bytes:
    from PIL import Image

    from tests.conftest import jpeg_bytes

    return jpeg_bytes(Image.new("RGB", (64, 64), (10, 200, 30)))


class NoModel:
    stamp, batch_size = STAMP, 4

    def embed(self, images):
        raise AssertionError("nothing should reach the model")


def test_a_full_disk_while_saving_a_photo_stops_the_run(tmp_path, monkeypatch):
    def enospc(target, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "write_bytes", enospc)
    with Store(tmp_path / "home") as s:
        ids = s.add_photos(Photo("flickr", str(10 + i), "cat", url=f"http://x/{i}") for i in range(3))
        with pytest.raises(StoreError, match=r"photos \(No space left on device\): the disk .* looks full"):
            pipeline.ingest(s, ids, NoModel(), OneFileFetcher())
        assert s.counts()["failures"] == 0  # a full disk is not the photos' fault: nothing recorded as failed


# ---- every index kind: verify is clean on a fresh one, finds each damage, and --repair keeps the kind ----------
KIND_DIM = 16
KIND_STAMP = Stamp(model="vgg16", layer="block5_pool", weights="random:0", dim=KIND_DIM)


def kind_home(tmp_path, monkeypatch, kind: str, fp16: bool = True) -> Path:
    """300 synthetic vectors through the real Store, reindexed as `kind` (as `imgidx reindex --kind` does)."""
    home = tmp_path / f"{kind}-{fp16}"
    monkeypatch.setenv("IMGIDX_HOME", str(home))
    rng = np.random.default_rng(7)
    v = rng.normal(size=(300, KIND_DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    policy = ann.Policy(fp16=fp16)  # as `reindex --kind` on a home whose float32 choice was recorded
    with Store(home, index_policy=policy) as s:
        s.ensure_stamp(KIND_STAMP)
        ids = s.add_photos(Photo("folder", f"p{i}.jpg", "c") for i in range(len(v)))
        s.add_vectors([(i, "", f"sha{i}") for i in ids], v)
        s.rebuild_index(kind)
        assert ann.kind_of(s.index) == kind and ann.is_fp16(s.index) == (fp16 and kind != "flat")
    return home


def file_kind(home: Path) -> tuple[str, bool]:
    index = faiss_index.read_index(home / "index" / "faiss.index")
    return ann.kind_of(index), ann.is_fp16(index)


KIND_CASES = [("flat", False), ("ivf", True), ("ivf", False), ("hnsw", True), ("hnsw", False)]


@pytest.mark.parametrize(("kind", "fp16"), KIND_CASES)
@pytest.mark.parametrize("damage", ["none", "drop", "corrupt", "delete"])
def test_every_kind_verifies_clean_reports_damage_and_repairs_to_the_same_kind(
    tmp_path, monkeypatch, kind, fp16, damage
):
    home = kind_home(tmp_path, monkeypatch, kind, fp16)
    before = file_kind(home)
    path = home / "index" / "faiss.index"
    with Store(home, readonly=True) as s:
        ids, stored = s.vector_ids(), s.vectors(s.vector_ids())
    policy = ann.Policy(fp16=fp16, train_per_list=10, hnsw_m=8)
    if damage == "drop":  # the file lost 5 vectors
        faiss_index.write_atomic(
            ann.build(kind, KIND_DIM, ids[5:], lambda p: stored[[ids.index(i) for i in p]], policy=policy), path
        )
    elif damage == "corrupt":  # one vector in the file is not the stored one
        bad = stored.copy()
        bad[3] = -bad[3]
        faiss_index.write_atomic(
            ann.build(kind, KIND_DIM, ids, lambda p: bad[[ids.index(i) for i in p]], policy=policy), path
        )
    elif damage == "delete":
        path.unlink()
    expected = {
        "none": set(),
        "drop": {"index_behind"},
        "corrupt": {"index_vector_differs"},
        "delete": {"index_missing"},
    }
    report = check(home)
    assert kinds(report) == expected[damage], report.as_dict()
    if damage == "corrupt":
        assert report.findings[0].ids == (ids[3],)  # the one damaged vector, not every float16 one
    if damage == "none":
        assert cli().exit_code == 0
        return
    r = cli("--repair") if damage != "delete" else None
    if r is not None:  # the CLI repairs errors; a missing file is a warning (below: the library repair)
        assert r.exit_code == 0, r.stdout + r.stderr
    else:
        fix(home)
    assert file_kind(home) == before  # the same kind and storage, not a flat index
    assert check(home).findings == ()


def test_verify_reports_an_index_file_of_another_kind_than_requested(tmp_path, monkeypatch):
    home = kind_home(tmp_path, monkeypatch, "hnsw")
    with Store(home) as s:  # what an old `verify --repair` did: a flat file while the home asks for hnsw
        faiss_index.write_atomic(ann.build("flat", KIND_DIM, s.vector_ids(), s.vectors), s.index_path)
    assert kinds(check(home)) == {"index_wrong_kind"}
    assert cli("--repair").exit_code == 0 and file_kind(home) == ("hnsw", True)


# ---- issue 13 item 7: loose ends of reindex and full disks --------------------------------------------------------
def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_reindex_removes_the_temp_file_a_killed_reindex_left(home):
    stale = home / "index" / f".faiss.index.{dead_pid()}.tmp"  # what kill -9 during a save leaves
    stale.write_bytes(b"half an index")
    assert "temp_files" in kinds(check(home)) and cli().exit_code == 1
    r = runner.invoke(app, ["reindex", "--kind", "flat"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert not stale.exists() and cli().exit_code == 0


def test_reindex_records_the_kind_only_once_the_file_holds_it(tmp_path, monkeypatch):
    import faiss

    home = kind_home(tmp_path, monkeypatch, "flat")

    def full(index, path):
        raise RuntimeError("Error: 'ret == (size * 4)' failed: write error in x: 3 != 8 (No space left on device)")

    with monkeypatch.context() as m:
        m.setattr(faiss, "write_index", full)
        r = runner.invoke(app, ["reindex", "--kind", "ivf"])
    assert r.exit_code == 1 and "looks full" in r.stderr
    with Store(home, readonly=True) as s:
        assert s.index_kind == "flat" and ann.kind_of(s.index) == "flat"  # info: flat, requested flat, not ivf


def test_the_disk_full_line_says_full_and_what_to_do_without_faiss_internals(home, monkeypatch):
    import faiss

    def full(index, path):
        raise RuntimeError(
            "Error in void faiss::write_index: Error: 'ret == (size * 4)' failed: write error in "
            f"{path}: 307118 != 983040 (No space left on device)"
        )

    monkeypatch.setattr(faiss, "write_index", full)
    with Store(home) as s, pytest.raises(StoreError) as e:
        s.rebuild_index()
    message = str(e.value)
    assert "looks full" in message and "free some space" in message and "(No space left on device)" in message
    assert "!=" not in message and "ret ==" not in message and "write_index" not in message


def test_a_missing_index_after_a_full_disk_is_lag_not_an_error(tmp_path, monkeypatch):
    import faiss

    home = tmp_path / "home"
    monkeypatch.setenv("IMGIDX_HOME", str(home))

    def full(index, path):
        raise RuntimeError("write error in x: 3 != 8 (No space left on device)")

    with Store(home) as s:  # a first build whose only save hit a full disk: every vector is in SQLite
        s.ensure_stamp(STAMP)
        ids = s.add_photos(Photo("folder", f"p{i}.jpg", "c") for i in range(4))
        s.add_vectors([(i, "", f"s{i}") for i in ids], unit(4))
        with monkeypatch.context() as m, pytest.raises(StoreError, match="looks full"):
            m.setattr(faiss, "write_index", full)
            s.save_index()
    report = check(home)
    [finding] = report.findings
    assert finding.kind == "index_missing" and not finding.error and finding.repairable and report.ok
    assert cli().exit_code == 0
    fix(home)
    assert (home / "index" / "faiss.index").exists() and check(home).findings == ()
