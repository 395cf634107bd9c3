"""The catalogue: SQLite (metadata, collections, states, predictions, each vector's slot) + the vector file
(vectorfile.py: the exact vectors); together the source of truth. WAL lets readers and one writer proceed
together.

One transaction rule: every write goes through `transaction()`, so a full disk or a read-only home is always the
one-line StoreError of faiss_index.write_error (the transaction is rolled back), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .. import layout
from ..errors import NoIndexError, StampMismatch, StoreError
from ..records import Photo, Stamp
from . import schema
from .faiss_index import write_error
from .vectorfile import DEFAULT_DTYPE, VectorFile

# A membership's effective flag: a person's newest review decision if any, else the automatic flag (clean,
# duplicates). Every reader of "flagged" goes through it, so similar --in, train, export and the counts agree.
EFFECTIVE_FLAG = (
    "COALESCE((SELECT r.decision = 'flag' FROM reviews r WHERE r.collection = c.name AND r.photo_id = c.photo_id "
    "ORDER BY r.id DESC LIMIT 1), c.flagged)"
)
DECISIONS = ("flag", "keep")
REVIEW_SOURCES = ("clean", "duplicates", "audit")

PHOTO_FIELDS = (
    "url",
    "title",
    "owner",
    "owner_name",
    "license",
    "page_url",
    "tags",
    "date_upload",
    "date_taken",
    "width",
    "height",
)


class Catalog:
    def __init__(self, home: Path, *, readonly: bool = False, timeout: float = 30):
        self.home = Path(home)
        self.readonly = readonly
        self.timeout = timeout  # SQLite's busy timeout: how long a write waits for another writer (a build)
        self.db_path = layout.db_file(self.home)
        if readonly and not self.db_path.exists():
            raise NoIndexError(f"no index in {self.home}; build one first (or set IMGIDX_HOME)")
        if not readonly:
            self.home.mkdir(parents=True, exist_ok=True)
        self._vector_file: VectorFile | None = None
        self.db = self._connect()
        if not readonly:
            self._move_blobs()

    # ---- connection and schema -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            try:
                return self._open()
            except sqlite3.OperationalError as e:
                if not (self.readonly and _a_writer_was_killed(e)):
                    raise
                self._roll_back_a_killed_writer()
                return self._open()
        except sqlite3.OperationalError as e:
            raise write_error(self.db_path, e) from None  # a full disk while creating it, or locked
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"cannot open {self.db_path}: {e}; recover it with `sqlite3 {self.db_path} .recover | sqlite3 "
                "fixed.sqlite`, put fixed.sqlite in its place, then verify the home with repair"
            ) from None

    def _open(self) -> sqlite3.Connection:
        if self.readonly:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=self.timeout)
        else:
            db = sqlite3.connect(self.db_path, timeout=self.timeout)
        try:
            if not self.readonly:
                db.execute("PRAGMA journal_mode=WAL")
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            if self.readonly and schema.needs_upgrade(db):
                self._upgrade()  # an older store a reader meets first (the service): migrate it once, briefly
            schema.ensure(db, self.db_path, readonly=self.readonly)
        except BaseException:
            db.close()
            raise
        return db

    def _roll_back_a_killed_writer(self) -> None:
        """A writer killed inside a rollback-journal transaction (a new home's switch to WAL) leaves a hot journal,
        and one killed while the WAL index was being rebuilt leaves that to redo: only a read-write connection may
        finish either. Opening one is SQLite's own recovery (it rolls the journal back under its locks, safe beside a
        running build); the data is what the last commit left."""
        if not (os.access(self.db_path, os.W_OK) and os.access(self.home, os.W_OK)):
            raise StoreError(
                f"{self.db_path}: the last process writing it was killed in the middle of a transaction, and rolling "
                f"that back needs write access to {self.home}; open the index once as a user who can write there (any "
                "reading rolls it back; nothing committed is lost)"
            )
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=self.timeout)) as db:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the first read rolls back / recovers

    def _upgrade(self) -> None:
        """Bring an older schema up to date through a short read-write connection (when the file is writable;
        otherwise ensure() says how). Migrations only add tables, so a build running beside us is unaffected."""
        if not os.access(self.db_path, os.W_OK):
            return
        Catalog(self.home, timeout=30).close()  # a writer migrates, then moves old BLOB vectors to the file

    def _move_blobs(self, batch: int = 4096) -> None:
        """Schema 3: move the float32 BLOBs of an older store into the vector file (kept float32: its index and a
        resumed build stay bit for bit what they were), batch by batch, each batch's rows fsynced before the
        transaction that gives them slots and deletes their BLOBs; a crash resumes where it stopped."""
        if not schema.has_blobs(self.db):
            return
        moved = 0
        while True:
            with self.transaction():
                self._write_lock()  # the write lock first: nobody appends beside us
                rows = self.db.execute(
                    "SELECT photo_id, vec FROM vector_blobs ORDER BY photo_id LIMIT ?", (batch,)
                ).fetchall()
                if not rows:
                    self.db.execute("DROP TABLE vector_blobs")
                    break
                if self.meta("vector_dtype") is None:
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('vector_dtype', 'float32')")
                dim = self.stamp.dim if self.stamp else len(rows[0][1]) // 4
                good = [(pid, blob) for pid, blob in rows if len(blob) == 4 * dim]
                bad = [pid for pid, blob in rows if len(blob) != 4 * dim]
                if good:
                    vf = self._vectors_file(dim)
                    start = self._next_slot()
                    data = np.frombuffer(b"".join(blob for _, blob in good), dtype=np.float32).reshape(-1, dim)
                    vf.write(start, vf.encode(data))
                    self.db.executemany(
                        "INSERT OR REPLACE INTO vectors (photo_id, slot) VALUES (?, ?)",
                        [(pid, start + i) for i, (pid, _) in enumerate(good)],
                    )
                # unusable BLOBs (another dimension): dropped, so a build embeds those photos again
                self.db.executemany(
                    "UPDATE photos SET state=CASE WHEN path IS NULL THEN 'found' ELSE 'downloaded' END WHERE id=?",
                    [(pid,) for pid in bad],
                )
                self.db.executemany("DELETE FROM vector_blobs WHERE photo_id=?", [(pid,) for pid, _ in rows])
                moved += len(rows)
        if moved:
            self.db.execute("VACUUM")  # give the BLOBs' pages back to the disk (16 KB a photo)

    def close(self) -> None:
        self.db.close()  # the vector file holds no descriptor between reads (vectorfile.VectorFile.read)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a full disk becomes one clear StoreError (the transaction is rolled back)."""
        try:
            with self.db:
                yield self.db
        except sqlite3.OperationalError as e:
            raise write_error(self.db_path, e) from None

    @contextmanager
    def snapshot(self) -> Iterator[Catalog]:
        """Read inside one SQLite read transaction: a consistent view of metadata, vectors and the index while
        a build commits next to us (WAL lets readers and the writer proceed together)."""
        if self.db.in_transaction:
            yield self
            return
        self.db.execute("BEGIN")
        try:
            yield self
        finally:
            self.db.rollback()

    # ---- stamp and meta --------------------------------------------------------------------------------------
    @property
    def stamp(self) -> Stamp | None:
        value = self.meta("stamp")
        return Stamp.from_dict(json.loads(value)) if value else None

    def ensure_stamp(self, stamp: Stamp) -> None:
        """Adopt `stamp` for an empty store, or refuse when it differs from the one the vectors were made with."""
        current = self.stamp
        if current is None:
            self.set_meta("stamp", json.dumps(stamp.as_dict()))
        elif current != stamp:
            raise StampMismatch(stamp_mismatch_message(current, stamp, self.home))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ---- photos and collections ------------------------------------------------------------------------------
    def add_photos(self, photos: Iterable[Photo]) -> list[int]:
        """Insert or refresh photos (deduplicated by source identity) and their collection membership."""
        ids = []
        now = time.time()
        with self.transaction():
            for rank, p in enumerate(photos):
                values = {f: getattr(p, f) for f in PHOTO_FIELDS}
                values["tags"] = " ".join(p.tags)
                row = self.db.execute(
                    f"""INSERT INTO photos (source, origin, source_id, path, state, added_at, updated_at,
                            {", ".join(PHOTO_FIELDS)})
                        VALUES (?, ?, ?, ?, 'found', ?, ?, {", ".join("?" * len(PHOTO_FIELDS))})
                        ON CONFLICT (source, origin, source_id) DO UPDATE SET
                            {", ".join(f"{f}=excluded.{f}" for f in PHOTO_FIELDS)},
                            path=COALESCE(photos.path, excluded.path), updated_at=excluded.updated_at
                        RETURNING id""",
                    (p.source, p.origin, p.source_id, p.path, now, now, *values.values()),
                ).fetchone()
                ids.append(row[0])
                self.db.execute(
                    "INSERT OR IGNORE INTO collections (name, photo_id, query, rank, added_at) VALUES (?, ?, ?, ?, ?)",
                    (p.collection, row[0], p.query, rank, now),
                )
        return ids

    def pending(self, ids: Sequence[int], *, retry_failed: bool = False) -> list[sqlite3.Row]:
        """Rows among `ids` that still need work (not yet embedded; failed ones only when asked to retry)."""
        states = ("found", "downloaded", "failed") if retry_failed else ("found", "downloaded")
        rows = []
        for chunk in chunks(ids, 900):
            rows += self.db.execute(
                f"SELECT * FROM photos WHERE id IN ({','.join('?' * len(chunk))}) AND state IN "
                f"({','.join('?' * len(states))})",
                (*chunk, *states),
            ).fetchall()
        if retry_failed:
            rows = [r for r in rows if r["state"] != "failed" or r["retryable"]]
        return sorted(rows, key=lambda r: r["id"])

    def states(self, ids: Sequence[int]) -> dict[int, str]:
        out = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 900):
            q = f"SELECT id, state FROM photos WHERE id IN ({','.join('?' * len(chunk))})"
            out.update(dict(self.db.execute(q, chunk).fetchall()))
        return out

    def mark_downloaded(self, photo_id: int, path: str, sha256: str) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE photos SET state='downloaded', path=?, sha256=?, error=NULL, updated_at=? "
                "WHERE id=? AND state IN ('found','failed')",
                (path, sha256, time.time(), photo_id),
            )

    def mark_failed(self, failures: Iterable[tuple[int, str, bool]]) -> None:
        with self.transaction():
            self.db.executemany(
                "UPDATE photos SET state='failed', error=?, retryable=?, attempts=attempts+1, updated_at=? WHERE id=?",
                [(reason, int(retryable), time.time(), pid) for pid, reason, retryable in failures],
            )

    def vector_for_sha256(self, sha256: str) -> npt.NDArray[np.float32] | None:
        """A stored vector of a photo with identical bytes (the same file under two names is embedded once)."""
        row = self.db.execute(
            "SELECT v.slot FROM vectors v JOIN photos p ON p.id = v.photo_id WHERE p.sha256=? LIMIT 1", (sha256,)
        ).fetchone()
        return self._vectors_file().read([row[0]])[0] if row else None

    # ---- vectors ---------------------------------------------------------------------------------------------
    def insert_vectors(
        self, items: Sequence[tuple[int, str, str]], vectors: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Commit vectors with their photos' path/sha256 (state 'embedded'): the rows are appended to the vector
        file and fsynced, then one transaction commits their slots and states. Returns the vectors as stored
        (float16-rounded in a float16 store), which is what the index must hold.

        items: (photo_id, path, sha256) aligned with the rows of `vectors`."""
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} photos but {len(vectors)} vectors")
        now = time.time()
        with self.transaction():
            self._write_lock()  # the write lock before the slots are chosen: one appender
            if self.meta("vector_dtype") is None:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('vector_dtype', ?)", (DEFAULT_DTYPE,))
            vf = self._vectors_file(self.stamp.dim if self.stamp else vectors.shape[1])
            start = self._next_slot()
            rows = vf.encode(vectors)
            try:
                vf.write(start, rows)
            except OSError as e:
                raise write_error(vf.path, e) from None
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors (photo_id, slot) VALUES (?, ?)",
                [(pid, start + i) for i, (pid, _, _) in enumerate(items)],
            )
            self.db.executemany(
                "UPDATE photos SET state='embedded', path=?, sha256=?, error=NULL, updated_at=? WHERE id=?",
                [(path, sha, now, pid) for pid, path, sha in items],
            )
        return rows.astype(np.float32)

    def _write_lock(self) -> None:
        """Take SQLite's write lock now (not at the first write): the vector file's end is ours until commit."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def _next_slot(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(slot) + 1, 0) FROM vectors").fetchone()[0]

    def committed_slots(self) -> int:
        """Rows of the vector file that SQLite has committed (anything beyond is a killed writer's tail)."""
        return self._next_slot()

    def truncate_vectors(self) -> None:
        """Cut the vector file after the committed slots (a killed writer's tail); hold the build lock."""
        with self.transaction():
            self._write_lock()
            if self.stamp is not None:
                self._vectors_file().truncate(self._next_slot())

    @property
    def vector_dtype(self) -> str:
        return self.meta("vector_dtype") or DEFAULT_DTYPE

    def _vectors_file(self, dim: int | None = None) -> VectorFile:
        dim = dim or (self.stamp.dim if self.stamp else 0)
        dtype = self.vector_dtype
        vf = self._vector_file
        if vf is None or vf.dim != dim or vf.dtype != np.dtype(dtype):
            vf = self._vector_file = VectorFile(layout.vectors_file(self.home), dim, dtype)
        return vf

    def mark_indexed(self) -> None:
        """Every 'embedded' photo is in the saved index file now."""
        with self.transaction():
            self.db.execute("UPDATE photos SET state='indexed' WHERE state='embedded'")

    def has_state(self, state: str) -> bool:
        return self.db.execute("SELECT 1 FROM photos WHERE state=? LIMIT 1", (state,)).fetchone() is not None

    def vectors(self, ids: Sequence[int], *, out: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
        """Exact stored vectors for `ids`, in that order (never the approximate index); float32 whatever the
        file's dtype. out: a C-contiguous float32 (len(ids), dim) array to read them into (returned)."""
        slot_of = self.slots(ids)
        missing = len(set(ids)) - len(slot_of)
        if missing:
            raise StoreError(f"{missing} of the requested photos have no stored vector")
        return self._vectors_file().read([slot_of[i] for i in ids], out=out)

    def slots(self, ids: Sequence[int]) -> dict[int, int]:
        """photo id -> slot in the vector file, for those of `ids` that have a stored vector."""
        slot_of: dict[int, int] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 900):
            q = f"SELECT photo_id, slot FROM vectors WHERE photo_id IN ({','.join('?' * len(chunk))})"
            slot_of.update(self.db.execute(q, chunk).fetchall())
        return slot_of

    def vector_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def has_vector(self, photo_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM vectors WHERE photo_id=?", (photo_id,)).fetchone() is not None

    def vector_ids(self, collection: str | None = None, *, include_flagged: bool = True) -> list[int]:
        sql = "SELECT v.photo_id FROM vectors v"
        args: list = []
        if collection is not None:
            sql += " JOIN collections c ON c.photo_id = v.photo_id AND c.name = ?"
            args.append(collection)
            if not include_flagged:
                sql += f" AND {EFFECTIVE_FLAG} = 0"
        return [r[0] for r in self.db.execute(sql + " ORDER BY v.photo_id", args)]

    # ---- reading metadata ------------------------------------------------------------------------------------
    def photo_rows(self, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        rows = {}
        for chunk in chunks(list(ids), 900):
            for r in self.db.execute(f"SELECT * FROM photos WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                rows[r["id"]] = r
        return rows

    def collections_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {i: [] for i in ids}
        for chunk in chunks(list(ids), 900):
            for pid, name in self.db.execute(
                f"SELECT photo_id, name FROM collections WHERE photo_id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY name",
                chunk,
            ):
                out[pid].append(name)
        return out

    def set_flags(self, collection: str, info: dict[int, dict], flagged: set[int]) -> None:
        """Store a clean result on the collection's memberships (reversible with clear_flags)."""
        with self.transaction():
            self.db.executemany(
                "UPDATE collections SET flagged=?, clean_info=? WHERE name=? AND photo_id=?",
                [(int(pid in flagged), json.dumps(data), collection, pid) for pid, data in info.items()],
            )

    def clear_duplicate_flags(self, collections: Sequence[str] = ()) -> int:
        """Remove the automatic flags duplicates --apply set (clean's stay; reviews stay): memberships unflagged."""
        sql = (
            "UPDATE collections SET flagged=0, clean_info=NULL "
            "WHERE json_extract(clean_info, '$.duplicate_of') IS NOT NULL"
        )
        if collections:
            sql += f" AND name IN ({','.join('?' * len(collections))})"
        with self.transaction():
            return self.db.execute(sql, list(collections)).rowcount

    def clear_flags(self, collection: str) -> int:
        with self.transaction():
            return self.db.execute(
                "UPDATE collections SET flagged=0, clean_info=NULL WHERE name=? AND (flagged=1 OR clean_info IS NOT "
                "NULL)",
                (collection,),
            ).rowcount

    # ---- reviews: a person's decisions, kept apart from the automatic flags ----------------------------------
    def add_review(
        self, collection: str, photo_id: int, decision: str, *, reviewer: str, source: str, now: float | None = None
    ) -> sqlite3.Row:
        """Record a person's decision on a membership (appended: the newest one counts)."""
        with self.transaction():
            return self.db.execute(
                "INSERT INTO reviews (photo_id, collection, decision, reviewer, created_at, source) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
                (photo_id, collection, decision, reviewer, time.time() if now is None else now, source),
            ).fetchone()

    def add_reviews(
        self, collection: str, photo_ids: Sequence[int], decision: str, *, reviewer: str, source: str
    ) -> None:
        """The same decision on several memberships, in one transaction (all of them or none)."""
        now = time.time()
        with self.transaction():
            self.db.executemany(
                "INSERT INTO reviews (photo_id, collection, decision, reviewer, created_at, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(pid, collection, decision, reviewer, now, source) for pid in photo_ids],
            )

    def remove_last_reviews(self, collection: str, photo_ids: Sequence[int]) -> None:
        """Undo on several memberships in one transaction: each one's newest decision is deleted."""
        with self.transaction():
            self.db.executemany(
                "DELETE FROM reviews WHERE id = (SELECT id FROM reviews WHERE collection=? AND photo_id=? "
                "ORDER BY id DESC LIMIT 1)",
                [(collection, pid) for pid in photo_ids],
            )

    def remove_last_review(self, collection: str, photo_id: int) -> sqlite3.Row | None:
        """Undo: delete the newest decision on a membership (the one before it, or the automatic flag, counts
        again); returns the deleted row, None when there was none."""
        with self.transaction():
            return self.db.execute(
                "DELETE FROM reviews WHERE id = (SELECT id FROM reviews WHERE collection=? AND photo_id=? "
                "ORDER BY id DESC LIMIT 1) RETURNING *",
                (collection, photo_id),
            ).fetchone()

    def reviews(self, collection: str, *, history: bool = False) -> list[sqlite3.Row]:
        """The current decision per photo of `collection` (all decisions, oldest first, with history), each with
        the membership's automatic flag."""
        newest = (
            ""
            if history
            else "AND r.id = (SELECT MAX(id) FROM reviews WHERE collection=r.collection AND photo_id=r.photo_id)"
        )
        return self.db.execute(
            "SELECT r.*, c.flagged AS automatic FROM reviews r JOIN collections c ON c.name = r.collection AND "
            f"c.photo_id = r.photo_id WHERE r.collection=? {newest} ORDER BY r.id",
            (collection,),
        ).fetchall()

    def is_member(self, collection: str, photo_id: int) -> bool:
        q = "SELECT 1 FROM collections WHERE name=? AND photo_id=?"
        return self.db.execute(q, (collection, photo_id)).fetchone() is not None

    def effective_flags(self, collection: str) -> dict[int, bool]:
        q = f"SELECT c.photo_id, {EFFECTIVE_FLAG} FROM collections c WHERE c.name=?"
        return {pid: bool(f) for pid, f in self.db.execute(q, (collection,))}

    def flagged_elsewhere(self, collection: str) -> frozenset[tuple[str, int]]:
        """The memberships of the other collections flagged now (effective flag): what a clean of `collection`
        leaves out of its rivals and allies, so a cache of that clean is stale exactly when this changes."""
        rows = self.db.execute(
            "WITH cand (name, photo_id) AS (SELECT name, photo_id FROM collections WHERE flagged = 1 AND name != ? "
            "UNION SELECT collection, photo_id FROM reviews WHERE collection != ?) "
            "SELECT c.name, c.photo_id FROM cand JOIN collections c ON c.name = cand.name AND c.photo_id = "
            f"cand.photo_id WHERE {EFFECTIVE_FLAG} = 1",
            (collection, collection),
        )
        return frozenset((name, pid) for name, pid in rows)

    def save_predictions(self, model: str, rows: Sequence[tuple[int, str, float]]) -> None:
        now = time.time()
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO predictions (photo_id, model, label, probability, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(pid, model, label, float(p), now) for pid, label, p in rows],
            )

    def counts_by_collection(self) -> dict[str, int]:
        """Members of each collection (embedded or not): one pass over an index, no vectors."""
        return dict(self.db.execute("SELECT name, COUNT(*) FROM collections GROUP BY name").fetchall())

    def collection_names(self) -> list[str]:
        # one primary-key seek per name (250 at 1M photos), not a scan of every membership (DISTINCT: ~0.1 s)
        q = (
            "WITH RECURSIVE n(name) AS (SELECT MIN(name) FROM collections UNION ALL "
            "SELECT (SELECT MIN(name) FROM collections WHERE name > n.name) FROM n WHERE n.name IS NOT NULL) "
            "SELECT name FROM n WHERE name IS NOT NULL"
        )
        return [r[0] for r in self.db.execute(q)]

    def counts(self) -> dict:
        q = self.db.execute
        per_collection = {
            name: n
            for name, n in q(
                "SELECT c.name, COUNT(v.photo_id) FROM collections c LEFT JOIN vectors v ON v.photo_id = c.photo_id "
                "GROUP BY c.name ORDER BY c.name"
            )
        }
        # flagged memberships are few: only they (clean's flags, anything reviewed) are checked, not a million
        flagged = dict(
            q(
                "WITH cand (name, photo_id) AS (SELECT name, photo_id FROM collections WHERE flagged = 1 "
                "UNION SELECT collection, photo_id FROM reviews) "
                "SELECT c.name, COUNT(*) FROM cand JOIN collections c ON c.name = cand.name AND c.photo_id = "
                f"cand.photo_id JOIN vectors v ON v.photo_id = c.photo_id WHERE {EFFECTIVE_FLAG} = 1 GROUP BY c.name"
            ).fetchall()
        )
        clean = {name: n - flagged.get(name, 0) for name, n in per_collection.items()}
        states = dict(q("SELECT state, COUNT(*) FROM photos GROUP BY state").fetchall())
        return {
            "photos": q("SELECT COUNT(*) FROM vectors").fetchone()[0],
            "collections": per_collection,
            "clean": clean,
            "states": states,
            "failures": states.get("failed", 0),
        }

    def failures(self, limit: int = 1000) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT id, source, source_id, error, retryable, attempts FROM photos WHERE state='failed' "
            "ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()

    def calibration_rows(self, limit: int) -> list[sqlite3.Row]:
        """The first `limit` photos by id that did not fail (id, source, source_id, url, path): int8 calibration."""
        return self.db.execute(
            "SELECT id, source, source_id, url, path FROM photos WHERE state != 'failed' ORDER BY id LIMIT ?", (limit,)
        ).fetchall()

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's data_version): a reader's cue to look again."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]


def stamp_mismatch_message(have: Stamp, want: Stamp, home: Path) -> str:
    diffs = [
        f"{k} {getattr(have, k)!s} vs {getattr(want, k)!s}"
        for k in have.as_dict()
        if getattr(have, k) != getattr(want, k)
    ]
    return (
        f"the index in {home} was built with {have.describe()}, not {want.describe()} ({'; '.join(diffs)}); "
        "use the index's own model settings (its layer and weights), or build into another home"
    )


def chunks(seq: Sequence, n: int):
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])


def _a_writer_was_killed(e: sqlite3.OperationalError) -> bool:
    """What a read-only connection meets where a writer was killed mid-transaction: SQLITE_READONLY_RECOVERY or
    _ROLLBACK (Python 3.11+ has the code; before, a read-only connection's only reason to write is that)."""
    code = getattr(e, "sqlite_errorcode", None)
    return code in (264, 776) if code is not None else "readonly database" in str(e)
