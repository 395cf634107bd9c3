"""The FAISS index file: derived data. It is written atomically and rebuilt from the stored vectors (SQLite, the
source of truth) whenever it is missing, unreadable or behind. Only store.py and verify.py use this module."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import StoreError

DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def read_index(path: Path):
    """The index in `path`, or None when it is missing or unreadable (callers rebuild it)."""
    import faiss

    if not path.exists():
        return None
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        return None


def index_ids(index) -> npt.NDArray[np.int64]:
    """Ids held by an index of any kind imgidx builds (flat, IVF, HNSW; see ann.py)."""
    from .ann import ids_of

    if index is None or not index.ntotal:
        return np.empty(0, dtype=np.int64)
    return ids_of(index)


def write_atomic(index, path: Path) -> None:
    """Temp file + fsync + rename: a reader (or a crash) sees the old file or the new one, never half of one."""
    import faiss

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (RuntimeError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None


def write_error(path: Path, e: BaseException) -> StoreError:
    """One clear line for a failed write; says how much space is left when the disk looks full."""
    text = getattr(e, "strerror", None) or str(e).splitlines()[0][-120:]
    full = getattr(e, "errno", None) in DISK_FULL or any(
        w in str(e).lower() for w in ("disk is full", "disk i/o error", "file too large", "no space")
    )
    kept = "run the same command again: everything committed so far is kept"
    if not full:
        return StoreError(f"could not write {path} ({text}); check that the data home is writable, then {kept}")
    try:
        free = f", {shutil.disk_usage(_existing(path)).free // 2**20} MiB free"
    except OSError:
        free = ""
    return StoreError(
        f"could not write {path} ({text}): the disk or a file size limit looks full{free}; free some space and {kept}"
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def stale_temp_files(home: Path) -> list[Path]:
    """Temp files a killed writer left behind (index saves and downloads); safe to delete under the build lock."""
    found = list((home / "index").glob(".*.tmp"))
    photos = home / "photos"
    if photos.is_dir():
        found += [p for p in photos.rglob(".*.tmp") if p.is_file()]
    return sorted(found)
