"""The exact vectors of a home: one append-only file of fixed-size rows (`vectors.bin`), read with pread.

SQLite keeps each photo's slot (the `vectors` table: photo_id -> slot); row `slot` lies at slot * dim * itemsize.
The dtype is the store's meta `vector_dtype`: float16 for new stores (half the disk; cosine to the float32 vector
>= 1 - 1e-6, measured in README "A million photos"), float32 for stores made before the file existed (their
vectors were float32 BLOBs, moved here unchanged).

Crash safety: rows are written and fsynced *before* the SQLite transaction that commits their slots, and a
writer always appends at the end of the committed slots (MAX(slot) + 1), cutting whatever lies beyond: a build
killed between the two leaves an uncommitted tail that no reader ever sees and the next writer overwrites.
Appenders hold SQLite's write lock while they append (one at a time); readers only read slots SQLite committed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..atomic import fsync_dir
from ..errors import StoreError, VectorsLost

DTYPES = ("float16", "float32")
READ_CHUNK_ROWS = 512  # rows read into one buffer before they are converted (float16 at 4096-d: 4 MB)
DEFAULT_DTYPE = "float16"


class VectorFile:
    def __init__(self, path: Path, dim: int, dtype: str):
        if dtype not in DTYPES:
            raise StoreError(f"{path}: unknown vector dtype {dtype!r} in the store's meta; expected one of {DTYPES}")
        self.path = Path(path)
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.row_bytes = dim * self.dtype.itemsize

    def rows(self) -> int:
        """Whole rows in the file now (committed or not)."""
        return self.size() // self.row_bytes

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def encode(self, vectors: npt.NDArray) -> npt.NDArray:
        return np.ascontiguousarray(vectors, dtype=self.dtype)

    def read(
        self, slots: Sequence[int] | npt.NDArray[np.int64], *, out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """float32 rows at `slots`, in that order: one pread per run of consecutive slots (a collection's rows
        are mostly one run). pread, not mmap: mapped pages count in the process's RSS, so a whole-file pass
        (reindex, verify) would look like 8 GB of memory at a million photos; read pages stay page cache.
        out: a C-contiguous float32 (len(slots), dim) array to read into (returned), e.g. rows of a larger one."""
        slots = np.asarray(slots, dtype=np.int64)
        if out is None:
            out = np.empty((len(slots), self.dim), dtype=np.float32)
        elif out.shape != (len(slots), self.dim) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {(len(slots), self.dim)}")
        if not len(slots):
            return out
        order = np.argsort(slots, kind="stable")  # in file order: sequential reads on a cold cache
        ordered = slots[order]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered) != 1) + 1, [len(ordered)]])
        # the rows land in file order in a buffer of READ_CHUNK_ROWS rows, converted and put in the caller's order
        # a buffer at a time: per-run conversion costs more than the reads when candidates are scattered (64,000
        # runs for a re-ranking), and one buffer the size of the whole answer is 32 MB more memory to fault in for
        # a collection of 4,000 rows, converted after it has left the CPU's cache
        chunk = min(len(slots), READ_CHUNK_ROWS)
        raw = np.empty((chunk, self.dim), dtype=self.dtype)
        view = memoryview(raw.reshape(-1).view(np.uint8))
        fd = os.open(self.path, os.O_RDONLY) if self.path.exists() else -1
        try:
            done = 0  # rows of `ordered` read into out
            for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
                while a < b:  # a run, in pieces where it does not fit the buffer's free rows
                    n = min(b - a, done + chunk - a)
                    first = int(ordered[a])
                    part = view[(a - done) * self.row_bytes : (a - done + n) * self.row_bytes]
                    got = os.preadv(fd, [part], first * self.row_bytes) if fd >= 0 else 0
                    if got < n * self.row_bytes:
                        raise VectorsLost(
                            f"{self.path} holds {self.rows()} vectors but the catalogue points at slot "
                            f"{first + n - 1}: the file was cut short; repair the store (a build then embeds the "
                            "lost photos again)"
                        )
                    a += n
                    if a - done == chunk or a == len(ordered):  # the buffer is full, or this was the last row
                        out[order[done:a]] = raw[: a - done]
                        done = a
        finally:
            if fd >= 0:
                os.close(fd)
        return out

    def write(self, start: int, rows: npt.NDArray) -> None:
        """Write `rows` (already encoded) at slot `start`, cut the file after them, and fsync: on return they are
        durable, so a transaction may commit their slots."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = memoryview(np.ascontiguousarray(rows)).cast("B")
            offset, done = start * self.row_bytes, 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], offset + done)
            os.ftruncate(fd, offset + len(data))  # a killed writer's uncommitted tail goes
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's directory entry must survive a crash too
            fsync_dir(self.path.parent)

    def truncate(self, rows: int) -> None:
        """Cut the file to `rows` rows (an uncommitted tail); under the build lock only."""
        if self.size() > rows * self.row_bytes:
            with open(self.path, "r+b") as f:
                f.truncate(rows * self.row_bytes)
                os.fsync(f.fileno())


def cosine_error(vectors: npt.NDArray[np.float32], dtype: str = DEFAULT_DTYPE) -> dict:
    """How much storing unit `vectors` as `dtype` changes them: the largest 1 - cos(v, stored v) and the largest
    change of the cosine between two vectors (consecutive rows paired)."""
    v = np.asarray(vectors, dtype=np.float32)
    s = v.astype(dtype).astype(np.float32)
    own = 1.0 - (v * s).sum(axis=1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(s, axis=1))
    a, b = v[:-1], v[1:]
    pair = np.abs((a * b).sum(axis=1) - (s[:-1] * s[1:]).sum(axis=1))
    return {"max_self": float(own.max()), "max_pair": float(pair.max()) if len(pair) else 0.0}
