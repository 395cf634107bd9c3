"""The FAISS index life cycle: derived data. SQLite (catalog.py) holds the exact vectors; the index is loaded from
its file, caught up with every committed vector it lacks (and cleared of any SQLite does not hold), grown into the
kind its size calls for (ann.py), written atomically (atomic.py) and rebuilt whenever it is missing, unreadable
or behind. `verify` reads the file through here too, so every kind (flat, IVF, HNSW, float16 or not) is handled
by one piece of code.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .. import ann, atomic, layout
from ..errors import IndexUnavailable, StoreError
from ..records import Stamp

DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_FULL_WORDS = ("disk is full", "disk i/o error", "file too large", "no space", "quota exceeded")
_OS_REASON = re.compile(r"\(([A-Za-z][A-Za-z ,'-]{2,60})\)\s*$")  # FAISS ends its write errors with "(strerror)"
LOW_SPACE = 1 << 20  # less than this free: a failed write is a full disk whatever the message says


class VectorSource(Protocol):
    """What the index needs from the catalogue: the stamp and the exact stored vectors."""

    @property
    def stamp(self) -> Stamp | None: ...

    def vector_ids(self) -> list[int]: ...

    def vector_count(self) -> int: ...

    def has_state(self, state: str) -> bool: ...

    def vectors(self, ids: Sequence[int]) -> npt.NDArray[np.float32]: ...


def holds_committed(index, source: VectorSource) -> bool:
    """Whether `index` holds exactly the committed vectors, for two counts instead of a million ids: no photo waits
    in 'embedded' (committed, not yet in a saved file; a replaced vector passes through it too) and the index holds
    as many vectors as SQLite (only a repair drops vectors, and it rebuilds the index; `verify` compares every id)."""
    return not source.has_state("embedded") and index.ntotal == source.vector_count()


class FaissIndex:
    """The in-memory index of one home and its file. Not thread-safe: one writer (the build lock) at a time."""

    def __init__(self, path: Path, policy: ann.Policy = ann.DEFAULT):
        self.path = Path(path)
        self.policy = policy
        self.index = None  # loaded on first use by load()
        self.dirty = False  # holds vectors its file does not

    # ---- reading -------------------------------------------------------------------------------------------
    def read_file(self):
        """The index exactly as its file holds it, or None when it is missing or unreadable."""
        return read_index(self.path)

    def mapped(self, source: VectorSource):
        """The saved index mapped read-only from its file, for searches only, when it holds exactly the committed
        vectors (else None): nothing is read into memory but the pages a search touches (157 MB of IVF-PQ lists
        at a million photos, read and faulted in for a search that touches a part of them)."""
        index = read_index(self.path, mapped=True)
        dim = source.stamp.dim if source.stamp else None
        if index is None or index.d != dim or not holds_committed(index, source):
            return None
        return index

    def load(self, source: VectorSource, *, rebuild_large: bool = True):
        """The file's index caught up with `source`; a flat one when there is no usable file; None while empty.

        Without a usable file and with more vectors than a flat index holds (policy.flat_max), the index kind the
        size calls for is trained anew: minutes at a million vectors. rebuild_large=False (a reader, which could not
        save it: every command would pay again) raises IndexUnavailable instead, saying how to rebuild it once."""
        dim = source.stamp.dim if source.stamp else None
        index = self.read_file()
        if index is None or (dim and index.d != dim):
            if dim is None:
                return None
            count = source.vector_count()
            if count > self.policy.flat_max:  # caught up as flat, a million would take 16 GB
                if not rebuild_large:
                    state = "unreadable" if self.path.exists() else "missing"
                    raise IndexUnavailable(
                        f"the search index {self.path} is {state}, and training a new one on {count:,} stored "
                        "vectors takes minutes: rebuild it once with reindex (or repair the store), then search "
                        "again; searches restricted to a collection do not need it"
                    )
                return self.build("auto", source)
            index = ann.new_flat(dim)  # save() turns it into the kind its size calls for
        self.index = self._sync(index, source)
        return self.index

    def _sync(self, index, source: VectorSource):
        """Make the index hold exactly the committed vectors (catch up after a crash between commit and save); the
        common case costs two counts (holds_committed)."""
        if holds_committed(index, source):
            self.dirty = False
            return index
        in_index = set(ann.ids_of(index).tolist())
        in_db = set(source.vector_ids())
        extra = np.array(sorted(in_index - in_db), dtype=np.int64)
        missing = sorted(in_db - in_index)
        if len(extra):
            index = ann.remove_ids(index, extra)
        for start in range(0, len(missing), 4096):
            chunk = missing[start : start + 4096]
            index.add_with_ids(source.vectors(chunk), np.array(chunk, dtype=np.int64))
        self.dirty = bool(len(extra) or missing)
        return index

    # ---- changing ------------------------------------------------------------------------------------------
    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add (or replace: a re-embedded photo replaces its old vector) vectors in memory; save() writes them."""
        self.index = ann.remove_ids(self.index, ids)
        self.index.add_with_ids(vectors, ids)
        self.dirty = True

    def build(self, kind: str, source: VectorSource):
        """A new index of `kind` (flat|ivf|hnsw|auto) from every stored vector; not saved yet."""
        self.index = ann.build(kind, source.stamp.dim, source.vector_ids(), source.vectors, policy=self.policy)
        self.dirty = True
        return self.index

    def grow(self, requested: str, source: VectorSource) -> None:
        """Rebuild into the kind the size calls for when the index outgrew its kind (`auto` only)."""
        if ann.rebuild_target(self.index, requested, self.policy):
            self.build("auto", source)

    def write(self) -> None:
        """Atomic write of the in-memory index. Temp files of dead writers (a killed save) are removed first."""
        self.remove_stale_temps()
        write_atomic(self.index, self.path)
        self.dirty = False

    def remove_stale_temps(self) -> list[Path]:
        """Delete index temp files whose writer is gone (a kill -9 mid-save); a live writer's are left alone."""
        stale = [p for p in self.path.parent.glob(".*.tmp") if atomic.is_temp(p) and not atomic.owner_alive(p)]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale


def read_index(path: Path, *, mapped: bool = False):
    """The index in `path`, or None when it is missing or unreadable (callers rebuild it). mapped: the file's pages
    are mapped read-only, not read into memory; such an index must never be changed (FAISS aborts the process)."""
    import faiss

    if not path.exists():
        return None
    try:
        if mapped:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        return faiss.read_index(str(path))
    except RuntimeError:
        return None


def write_atomic(index, path: Path) -> None:
    """Temp file + fsync + rename + fsync of the folder (atomic.py); a failure is one clear StoreError."""
    import faiss

    try:
        with atomic.replacing(path) as tmp:
            faiss.write_index(index, str(tmp))
    except (RuntimeError, OSError) as e:
        raise write_error(path, e) from None


def write_error(path: Path, e: BaseException) -> StoreError:
    """One clear line for a failed write: what could not be written, why in the system's words (never a
    library's internals), and what to do; how much space is left when the disk looks full."""
    reason = _reason(e)
    said = f" ({reason})" if reason else ""
    free = _free_bytes(path)
    full = (
        getattr(e, "errno", None) in DISK_FULL
        or any(w in str(e).lower() for w in _FULL_WORDS)
        or (free is not None and free < LOW_SPACE)
    )
    kept = "run the same command again: everything committed so far is kept"
    if not full:
        return StoreError(f"could not write {path}{said}; check that the data home is writable, then {kept}")
    space = f", {free // 2**20} MiB free" if free is not None else ""
    return StoreError(
        f"could not write {path}{said}: the disk or a file size limit looks full{space}; free some space and {kept}"
    )


def _reason(e: BaseException) -> str:
    """The system's reason for a failed write: strerror, SQLite's message, or FAISS's trailing "(strerror)"."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, RuntimeError):  # FAISS: "Error: 'ret == (size * 4)' failed: write error in x: 3 != 8 (why)"
        m = _OS_REASON.search(str(e).strip())
        return m.group(1) if m else ""
    return text[:120]


def _free_bytes(path: Path) -> int | None:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def stale_temp_files(home: Path) -> list[Path]:
    """Temp files a killed writer left behind (index saves and downloads); safe to delete under the build lock."""
    return layout.temp_files(home)
