"""SQLite schema of the store: SCHEMA creates version 1; MIGRATIONS[v] upgrades v-1 to v. Never edit a shipped step.

ensure() brings an open database to SCHEMA_VERSION, each step in one transaction that also records its version,
so a crash or a full disk leaves a whole step or none of it (the caller turns SQLite errors into StoreError)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import NoIndexError, StoreError

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- One row per photo, whatever the number of collections it belongs to. id is also its FAISS id.
-- state: found -> downloaded -> embedded (vector committed) -> indexed (in the saved FAISS file) | failed
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,                -- 'flickr' | 'folder'
    origin TEXT NOT NULL DEFAULT '',     -- folder root for folder photos
    source_id TEXT NOT NULL,             -- Flickr id or path relative to the folder
    url TEXT, path TEXT,                 -- download URL; local file (relative to the home for downloads)
    title TEXT NOT NULL DEFAULT '', owner TEXT NOT NULL DEFAULT '', owner_name TEXT NOT NULL DEFAULT '',
    license INTEGER, page_url TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '',
    date_upload TEXT NOT NULL DEFAULT '', date_taken TEXT NOT NULL DEFAULT '', width INTEGER, height INTEGER,
    sha256 TEXT,
    state TEXT NOT NULL CHECK (state IN ('found', 'downloaded', 'embedded', 'indexed', 'failed')),
    error TEXT, retryable INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (source, origin, source_id)
);
CREATE INDEX IF NOT EXISTS photos_sha256 ON photos (sha256);
CREATE INDEX IF NOT EXISTS photos_state ON photos (state);

CREATE TABLE IF NOT EXISTS collections (
    name TEXT NOT NULL,
    photo_id INTEGER NOT NULL REFERENCES photos (id),
    query TEXT NOT NULL DEFAULT '', rank INTEGER, added_at REAL NOT NULL,
    -- set by clean (apply) on the membership: a dog flagged in "maybe_cat" is fine in "dog"
    flagged INTEGER NOT NULL DEFAULT 0, clean_info TEXT,
    PRIMARY KEY (name, photo_id)
);
CREATE INDEX IF NOT EXISTS collections_photo ON collections (photo_id);

-- classify (apply): one label per photo and classifier
CREATE TABLE IF NOT EXISTS predictions (
    photo_id INTEGER NOT NULL REFERENCES photos (id),
    model TEXT NOT NULL, label TEXT NOT NULL, probability REAL NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (photo_id, model)
);

-- Raw float32 vectors, exact, for clean/train and to rebuild the FAISS index at any time.
CREATE TABLE IF NOT EXISTS vectors (
    photo_id INTEGER PRIMARY KEY REFERENCES photos (id),
    vec BLOB NOT NULL
);
"""

# MIGRATIONS[v] upgrades a version v-1 store to v
MIGRATIONS: dict[int, str] = {
    # 2: a person's decisions on flags (the web page's review), kept apart from the automatic flags of clean and
    # duplicates, which later runs rewrite. Append-only history: the newest row of a membership is its decision;
    # undo deletes that newest row. The effective flag = that decision if any, else collections.flagged.
    2: """
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo_id INTEGER NOT NULL REFERENCES photos (id),
    collection TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('flag', 'keep')),
    reviewer TEXT NOT NULL,
    created_at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('clean', 'duplicates', 'audit'))
);
CREATE INDEX IF NOT EXISTS reviews_membership ON reviews (collection, photo_id, id);
""",
    # 3: the exact vectors leave SQLite for an append-only file (store/vectorfile.py; 16 KB BLOBs made a million
    # photos a 16 GB database). `vectors` now maps a photo to its slot in the file; the old BLOBs wait in
    # vector_blobs until vectorfile.move_blobs (run right after this step, by any writer) has moved them.
    3: """
ALTER TABLE vectors RENAME TO vector_blobs;
CREATE TABLE vectors (
    photo_id INTEGER PRIMARY KEY REFERENCES photos (id),
    slot INTEGER NOT NULL UNIQUE
);
-- the few flagged memberships, so counting a million clean ones need not visit each (catalog.counts)
CREATE INDEX IF NOT EXISTS collections_flagged ON collections (name, photo_id) WHERE flagged = 1;
""",
}


def needs_upgrade(db: sqlite3.Connection) -> bool:
    """True for a store with an older (but not absent) schema, or whose BLOB vectors are not all moved yet."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        return False
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return row is not None and (0 < int(row[0]) < SCHEMA_VERSION or has_blobs(db))


def has_blobs(db: sqlite3.Connection) -> bool:
    """Schema 3's vector_blobs table still exists: vectors of an older store wait to be moved to the file."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='vector_blobs'").fetchone() is not None


def ensure(db: sqlite3.Connection, db_path: Path, *, readonly: bool) -> None:
    """Create or upgrade the schema of `db` (a read-only connection can only check it)."""
    has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if has_meta else None
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path} has schema version {version}, newer than this imgidx ({SCHEMA_VERSION}); upgrade imgidx"
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0 and readonly:
        raise NoIndexError(f"no index in {db_path.parent} yet (is a first build still starting?); build one first")
    if readonly:
        raise StoreError(
            f"{db_path} has schema version {version}; open it once for writing (a build or a repair) to upgrade it "
            f"to version {SCHEMA_VERSION}"
        )
    if version == 0:  # one transaction: a crash or a full disk leaves all of the schema or none of it
        db.executescript(f"BEGIN; {SCHEMA} INSERT OR REPLACE INTO meta VALUES ('schema_version', '1'); COMMIT;")
        version = 1
    for v in range(version + 1, SCHEMA_VERSION + 1):  # each step records its version: a crash re-runs one step
        db.executescript(f"BEGIN;\n{MIGRATIONS[v]}\nUPDATE meta SET value='{v}' WHERE key='schema_version';\nCOMMIT;")
