"""The catalogue's side of `imgidx verify` (indexer/verify.py): the queries that find rows out of step with each other,
and the one transaction that repairs them. Kept in the store, where every SQL statement lives."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from .. import layout
from .catalog import Catalog

_HAS_VECTOR = "EXISTS (SELECT 1 FROM vectors v WHERE v.photo_id = photos.id)"
_PHOTO_JOIN = "SELECT p.id FROM photos p LEFT JOIN vectors v ON v.photo_id = p.id WHERE "

# Each named check: the ids of the rows it finds, by id.
CHECKS = {
    "vector_without_photo": "SELECT v.photo_id FROM vectors v LEFT JOIN photos p ON p.id = v.photo_id "
    "WHERE p.id IS NULL",
    "photo_without_vector": _PHOTO_JOIN + "p.state IN ('embedded','indexed') AND v.photo_id IS NULL",
    "state_behind_vector": _PHOTO_JOIN + "p.state NOT IN ('embedded','indexed') AND v.photo_id IS NOT NULL",
    "collection_without_photo": "SELECT c.photo_id FROM collections c LEFT JOIN photos p ON p.id = c.photo_id "
    "WHERE p.id IS NULL",
    "state_embedded": "SELECT id FROM photos WHERE state='embedded'",
}


class Checks(Catalog):
    def quick_check(self) -> list[str]:
        """SQLite's own integrity check: ["ok"] or the first problems it finds (an unreadable file: its error)."""
        try:
            return [str(r[0]) for r in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            return [str(e)]

    def photo_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0]

    def vector_slots(self) -> list[tuple[int, int]]:
        """(photo id, slot) of every committed vector, in slot order."""
        return [tuple(r) for r in self.db.execute("SELECT photo_id, slot FROM vectors ORDER BY slot")]

    def check_ids(self, check: str) -> list[int]:
        """The ids one of CHECKS finds."""
        return [r[0] for r in self.db.execute(CHECKS[check])]

    def stored_files(self) -> Iterator[tuple[int, str, str]]:
        """(photo id, stored path, sha256) of every photo with a file that was embedded."""
        yield from self.db.execute("SELECT id, path, sha256 FROM photos WHERE path <> '' AND sha256 <> ''")

    def failed_source_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT source_id FROM photos WHERE state='failed'")]

    def repair_rows(
        self, *, drop_vectors: Sequence[int] = (), drop_orphan_collections: bool = False, forget: Sequence[int] = ()
    ) -> int:
        """verify --repair's catalogue part, one transaction: drop unusable vectors' slots (the next build embeds
        those photos again), collection rows without a photo, the files of `forget` (changed downloads: deleted and
        forgotten, so a build downloads them again); then put every photo's state in step with its vector.
        Returns how many photos' states were corrected."""
        with self.transaction():
            self.db.executemany("DELETE FROM vectors WHERE photo_id=?", [(i,) for i in drop_vectors])
            if drop_orphan_collections:
                self.db.execute("DELETE FROM collections WHERE photo_id NOT IN (SELECT id FROM photos)")
            for pid in forget:
                row = self.db.execute("SELECT path FROM photos WHERE id=?", (pid,)).fetchone()
                if row and row[0]:
                    layout.local_file(self.home, row[0]).unlink(missing_ok=True)
                self.db.execute("UPDATE photos SET path=NULL WHERE id=?", (pid,))
            a = self.db.execute(
                "UPDATE photos SET state='embedded', error=NULL WHERE state NOT IN ('embedded','indexed') "
                f"AND {_HAS_VECTOR}"
            )
            b = self.db.execute(
                "UPDATE photos SET state=CASE WHEN path IS NULL THEN 'found' ELSE 'downloaded' END "
                f"WHERE state IN ('embedded','indexed') AND NOT {_HAS_VECTOR}"
            )
            return a.rowcount + b.rowcount
