"""Store: the facade over one data home. SQLite (catalog.py: metadata, collections, states, each vector's slot)
and the vector file (vectorfile.py: the exact vectors): the source of truth; a FAISS index (faiss_index.py:
derived); migrations (schema.py).

Crash safety: a vector is fsynced to the vector file before the SQLite transaction that commits its slot and its
photo's state (a killed build leaves at most an unread tail, overwritten by the next append); the FAISS file is
written to a temporary file and renamed. On open, the index catches up with every committed vector it lacks (and
drops any it holds that SQLite does not), so an interrupted build never leaves vectors without metadata or the
reverse.
FAISS ids equal photos.id, so a vector and its metadata cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .. import ann
from ..errors import IndexUnavailable, StoreError
from ..layout import DB_NAME, INDEX_NAME, index_file
from ..records import Hit
from .catalog import PHOTO_FIELDS, stamp_mismatch_message
from .checks import Checks
from .faiss_index import FaissIndex

EXACT_ALLOWED = 20_000  # a restricted search over at most this many photos reads their stored vectors instead

__all__ = ["DB_NAME", "INDEX_NAME", "PHOTO_FIELDS", "Store", "stamp_mismatch_message"]


class Store(Checks):
    """Catalogue methods (catalog.py; verify's queries: checks.py) plus the index: add_vectors, index, search,
    save_index, rebuild_index."""

    def __init__(self, home: Path, *, readonly: bool = False, index_policy: ann.Policy = ann.DEFAULT):
        super().__init__(home, readonly=readonly)
        self.index_policy = index_policy  # which FAISS index kind for which size (indexer/ann.py)
        self.index_path = index_file(self.home)
        self.faiss = FaissIndex(self.index_path, index_policy)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- vectors ---------------------------------------------------------------------------------------------
    def add_vectors(self, items: Sequence[tuple[int, str, str]], vectors: npt.NDArray[np.float32]) -> None:
        """Commit vectors with their photos' path/sha256 in one transaction, then add them to the in-memory index.

        items: (photo_id, path, sha256) aligned with the rows of `vectors`."""
        vectors = _check_vectors(vectors, self.stamp.dim if self.stamp else vectors.shape[1])
        stored = self.insert_vectors(items, vectors)  # as the file keeps them (float16-rounded or not)
        self.index  # noqa: B018 - loaded (and caught up) before adding to it
        self.faiss.add(np.array([pid for pid, _, _ in items], dtype=np.int64), stored)

    # ---- FAISS index -----------------------------------------------------------------------------------------
    @property
    def index(self):
        if self.faiss.index is None:
            self.faiss.load(self, rebuild_large=not self.readonly)
        return self.faiss.index

    def describe_index(self) -> dict:
        """ann.describe of the index searches would use, without reading a current saved file whole (it is mapped)
        and without training one for a missing or unreadable file past flat_max (reported as such: `info` and
        `reindex` must not spend minutes on an index they do not keep; below it, searches use a flat one)."""
        if self.faiss.index is None and self.stamp is not None:
            saved = self.faiss.mapped(self)
            if saved is not None:
                return ann.describe(saved)
            try:  # a file that lags the committed vectors is caught up; a small lost one made flat
                self.faiss.load(self, rebuild_large=False)
            except IndexUnavailable:
                return {**ann.describe(None), "file": "missing or unreadable: rebuild it with reindex"}
        return ann.describe(self.index)

    @property
    def index_kind(self) -> str:
        """The kind asked for with `rebuild_index` (default auto: by size, see indexer/ann.py)."""
        return self.meta("index_kind") or "auto"

    def rebuild_index(self, kind: str | None = None) -> None:
        """Rebuild the FAISS index from the exact stored vectors (kind: flat|ivf|ivfpq|hnsw|auto) and save it; the kind
        is recorded once the file holds it (a crash in between leaves the old request and a working file)."""
        if self.readonly or self.stamp is None:
            raise StoreError(f"cannot rebuild the index in {self.home}: it is read-only or empty")
        kind = ann.check_kind(kind or self.index_kind)
        self.faiss.policy = self._policy()
        built = self.faiss.build(kind, self)
        self.faiss.write()
        if kind != self.index_kind:
            self.set_meta("index_kind", kind)
        if ann.kind_of(built) in ("ivf", "hnsw"):  # remembered: a repair or a regrowth keeps float32 when chosen
            storage = "float16" if ann.is_fp16(built) else "float32"
            if self.meta("index_storage") != storage:
                self.set_meta("index_storage", storage)
        self.mark_indexed()

    def _policy(self) -> ann.Policy:
        """The caller's policy; with the default one, the storage the home's last rebuild chose (fp16 or not)."""
        stored = self.meta("index_storage")
        if self.index_policy != ann.DEFAULT or stored is None:
            return self.index_policy
        return replace(self.index_policy, fp16=stored == "float16")

    def save_index(self) -> None:
        """Atomic write (temp file + fsync + rename), then record which photos the file holds.

        Also finishes the work of a build killed during its last save: photos still 'embedded' after a restart
        are caught up into the index and marked 'indexed', so a resumed build ends where an uninterrupted one
        does even when it has nothing left to embed."""
        if self.readonly or (self.faiss.index is None and not self.has_state("embedded")):
            return
        if self.index is None:
            return
        self.faiss.policy = self._policy()
        self.faiss.grow(self.index_kind, self)  # outgrew its kind (auto only)
        if self.faiss.dirty or self.has_state("embedded") or not self.index_path.exists():
            self.faiss.write()
            self.mark_indexed()
        self.faiss.dirty = False

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files a killed build left (half-written index saves and downloads). Call under the lock."""
        from .faiss_index import stale_temp_files

        stale = stale_temp_files(self.home)
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def search(
        self, queries: npt.NDArray[np.float32], k: int, *, allowed: Sequence[int] | None = None
    ) -> list[list[Hit]]:
        """k nearest by inner product (= cosine on unit vectors); `allowed` restricts to those ids.

        A restriction to at most EXACT_ALLOWED photos (a collection) is answered exactly from the stored vectors,
        without the index: reading 4,000 rows is faster than loading a large index, and exact. A product-quantized
        index's candidates are re-ranked with the stored vectors (its own scores are too coarse). An index not loaded
        yet is mapped from its file for this search (when the file holds exactly the committed vectors), not read
        whole: a command searches once; a caller that searches again and again loads it first (`store.index`), as
        the service does."""
        if allowed is not None and 0 < len(allowed) <= EXACT_ALLOWED and self.stamp is not None:
            return self._exact(_check_vectors(queries, self.stamp.dim), list(allowed), k)
        index = self.faiss.index if self.faiss.index is not None else self.faiss.mapped(self)
        if index is None:
            index = self.index
        if index is None or index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        queries = _check_vectors(queries, index.d)
        if allowed is not None and not len(allowed):
            return [[] for _ in range(len(queries))]
        params = ann.search_params(index, allowed)
        rerank = ann.rerank_factor(index)
        scores, ids = index.search(queries, min(k * rerank, index.ntotal), params=params)
        if rerank > 1:
            return self._reranked(queries, [[int(i) for i in row if i != -1] for row in ids], k)
        # ties (identical photos) by id, not by insertion order: a resumed index answers like a fresh one
        return [
            sorted((Hit(int(i), float(s)) for s, i in zip(srow, irow, strict=True) if i != -1), key=_hit_order)
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def _exact(self, queries: npt.NDArray[np.float32], ids: list[int], k: int) -> list[list[Hit]]:
        slot_of = self.slots(ids)
        ids = [i for i in dict.fromkeys(ids) if i in slot_of]
        if not ids:
            return [[] for _ in range(len(queries))]
        return _top(queries @ self._vectors_file().read([slot_of[i] for i in ids]).T, ids, k)

    def _reranked(self, queries: npt.NDArray[np.float32], candidates: list[list[int]], k: int) -> list[list[Hit]]:
        """Each query's candidates ranked by their stored vectors, as _exact(query, its candidates) does, but read
        once for a group of queries: the queries of one call share most candidates (64 photos of one collection:
        6,500 distinct among 64,000), and reading is the cost. RERANK_READ_ROWS bounds the rows held at once."""
        out: list[list[Hit]] = []
        start = 0
        while start < len(queries):
            union: dict[int, None] = {}
            stop = start
            while stop < len(queries) and (stop == start or len(union) + len(candidates[stop]) <= RERANK_READ_ROWS):
                union.update(dict.fromkeys(candidates[stop]))
                stop += 1
            slot_of = self.slots(list(union))
            known = [i for i in union if i in slot_of]
            rows = self._vectors_file().read([slot_of[i] for i in known])
            at = {i: j for j, i in enumerate(known)}
            for q, cand in zip(queries[start:stop], candidates[start:stop], strict=True):
                ids = [i for i in dict.fromkeys(cand) if i in at]
                out.append(_top(q[None] @ rows[[at[i] for i in ids]].T, ids, k)[0] if ids else [])
            start = stop
        return out


RERANK_READ_ROWS = 16_384  # float32 rows at 4096-d: 256 MB


def _top(scores: npt.NDArray[np.float32], ids: list[int], k: int) -> list[list[Hit]]:
    out = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:k]  # ties: the lower id (ids are in the caller's order)
        out.append(sorted((Hit(ids[j], float(row[j])) for j in top), key=_hit_order))
    return out


def _hit_order(h: Hit) -> tuple[float, int]:
    return (-h.score, h.photo_id)


def _check_vectors(v: npt.NDArray, dim: int) -> npt.NDArray[np.float32]:
    if v.ndim != 2 or v.shape[1] != dim:
        raise TypeError(f"vectors must have shape (n, {dim}); received {v.shape}")
    return np.ascontiguousarray(v, dtype=np.float32)
