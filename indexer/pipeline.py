"""ingest(): the only loop. Fetch/read, decode and embed overlap: downloads in I/O threads, decoding in about one
thread per core (flow.two_stage), the model on the caller's thread.

Stages are joined by a bounded window, so memory stays bounded however many photos there are, and the model is
handed full batches without waiting for the network or the decoder. One photo's failure is recorded with its
reason and never stops the run. Every batch is committed (vectors + states) before the next one starts; the
FAISS file is saved every `save_every` seconds and at the end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .embedders import Embedder
from .errors import ImageError
from .fetch import Fetcher
from .flow import cores, two_stage
from .images import image_format, prepare
from .index_file import DISK_FULL, write_error
from .store import Store

log = logging.getLogger(__name__)
DECODE_NICE = 10  # decode threads yield the cores to the model's threads (flow.py; README "Performance")


@dataclass(frozen=True)
class Job:
    id: int
    source: str
    source_id: str
    url: str | None
    path: str | None


@dataclass(frozen=True)
class Loaded:
    job: Job
    path: str = ""
    sha256: str = ""
    pixels: np.ndarray | None = None
    error: str | None = None
    retryable: bool = False
    data: bytes | None = None  # between the fetch and the decode stage only


@dataclass
class IngestReport:
    requested: int = 0
    already: int = 0  # embedded by an earlier run: nothing to do
    failed_before: int = 0  # failed in an earlier run and not retried (see --retry-failed)
    embedded: int = 0
    reused: int = 0  # identical bytes seen before: vector copied, not recomputed
    downloaded: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (id, source_id, reason)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "requested": self.requested,
            "already_indexed": self.already,
            "failed_before": self.failed_before,
            "embedded": self.embedded,
            "reused": self.reused,
            "downloaded": self.downloaded,
            "skipped": len(self.skipped),
            "failures": [{"id": i, "source_id": s, "reason": r} for i, s, r in self.skipped],
            "seconds": round(self.seconds, 2),
            "photos_per_second": round((self.embedded + self.reused) / self.seconds, 2) if self.seconds else None,
        }


class Loader:
    """Turns a Job into pixels: fetch (download, or reuse the file already on disk, or read), then decode.

    The two halves run in separate thread pools (I/O vs CPU); calling the Loader does both. Never raises."""

    def __init__(self, home: Path, fetcher: Fetcher):
        self.home, self.fetcher = Path(home), fetcher

    def __call__(self, job: Job) -> Loaded:
        got = self.fetch(job)
        return self.decode(got) if got.error is None else got

    def fetch(self, job: Job) -> Loaded:
        """Bytes of the photo (in `data`), or the reason there are none."""
        try:
            data, path, error, retryable = self._bytes(job)
        except OSError as e:
            if e.errno in DISK_FULL:  # every later photo would fail the same way: stop the run, keep what is done
                raise write_error(self.home / "photos", e) from None
            return Loaded(job, error=f"cannot write the photo under {self.home} ({e.strerror or e})", retryable=True)
        if data is None:
            return Loaded(job, error=error, retryable=retryable)
        return Loaded(job, path, data=data)

    def decode(self, got: Loaded) -> Loaded:
        """Hash and decode fetched bytes into 224x224 pixels (the bytes are dropped)."""
        data = got.data or b""
        sha = hashlib.sha256(data).hexdigest()
        try:
            return replace(got, sha256=sha, pixels=prepare(data), data=None)
        except ImageError as e:
            return replace(got, sha256=sha, error=e.reason, data=None)

    def _bytes(self, job: Job) -> tuple[bytes | None, str, str | None, bool]:
        if job.url is None and job.path:  # a local file: read in place, never copied
            try:
                return Path(job.path or "").read_bytes(), job.path or "", None, False
            except OSError as e:
                return None, "", f"cannot read {job.path} ({e.strerror or e})", False
        folder, stem = photo_file(self.home, job.source, job.source_id)
        existing = _existing_file(folder, stem)
        if existing is not None:  # downloaded by an earlier run: never fetch twice
            return existing.read_bytes(), str(existing.relative_to(self.home)), None, False
        got = self.fetcher.fetch(job.url)
        if got.data is None:
            return None, "", got.error, got.retryable
        ext = image_format(got.data)
        if ext == "bin":
            return got.data, "", None, False  # not an image: decode records why; nothing worth keeping on disk
        target = folder / f"{stem}.{ext}"
        write_atomic(target, got.data)
        return got.data, str(target.relative_to(self.home)), None, False


def photo_file(home: Path, source: str, source_id: str) -> tuple[Path, str]:
    """Where a downloaded photo lives: (folder, file name without the extension). The one place here that knows it
    (the storage work moves it to layout.py, same scheme).

    Numeric ids (Flickr's) keep the layout of existing homes: photos/<source>/<last two digits>/<id>.<ext>. Any
    other id (a URL list's key, or its URL's sha1) is never used as a file name: its stem is "h" + 32 hex digits
    of its sha256 (no path tricks, no collisions with numeric ids, bounded length)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", source):
        raise OSError(f"refusing the source name {source!r} as a folder name")
    if source_id.isascii() and source_id.isdigit() and len(source_id) <= 40:
        stem = source_id
    else:
        stem = "h" + hashlib.sha256(source_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return home / "photos" / source / stem[-2:].rjust(2, "0"), stem


def _existing_file(folder: Path, stem: str) -> Path | None:
    if not folder.is_dir():
        return None
    return next((p for p in folder.glob(f"{stem}.*") if not p.name.endswith(".tmp")), None)


def write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def ingest(
    store: Store,
    photo_ids: Sequence[int],
    embedder: Embedder,
    fetcher: Fetcher,
    *,
    workers: int | None = None,
    decode_workers: int | None = None,
    retry_failed: bool = False,
    save_every: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Download, decode, embed and index the given photos; skip what an earlier run finished.

    workers: concurrent downloads/reads (default the fetcher's); decode_workers: decode threads (default: cores)."""
    start = time.monotonic()
    store.ensure_stamp(embedder.stamp)
    rows = store.pending(photo_ids, retry_failed=retry_failed)
    states = store.states(photo_ids)
    report = IngestReport(requested=len(states))
    report.already = sum(1 for st in states.values() if st in ("embedded", "indexed"))
    report.failed_before = len(states) - report.already - len(rows)
    jobs = [Job(r["id"], r["source"], r["source_id"], r["url"], r["path"]) for r in rows]
    loader = Loader(store.home, fetcher)
    last_save = time.monotonic()
    batch: list[Loaded] = []
    for item in two_stage(
        jobs,
        loader.fetch,
        loader.decode,
        fetch_workers=workers or fetcher.workers,
        decode_workers=decode_workers or cores(),
        window=3 * embedder.batch_size,  # one batch in the model, up to two more being fetched and decoded
        needs_decode=lambda got: got.error is None,
        decode_nice=DECODE_NICE,
    ):
        if item.error is not None:
            store.mark_failed([(item.job.id, item.error, item.retryable)])
            report.skipped.append((item.job.id, item.job.source_id, item.error))
            log.info("skipping %s: %s", item.job.source_id, item.error)
        else:
            batch.append(item)
        if len(batch) >= embedder.batch_size:
            _commit(store, embedder, batch, report)
            batch = []
        if on_progress:
            on_progress(1)
        if time.monotonic() - last_save > save_every:
            store.save_index()
            last_save = time.monotonic()
    if batch:
        _commit(store, embedder, batch, report)
    store.save_index()
    report.seconds = time.monotonic() - start
    return report


def _commit(store: Store, embedder: Embedder, batch: list[Loaded], report: IngestReport) -> None:
    """Embed one batch (reusing vectors of identical bytes) and commit it in one transaction."""
    for b in batch:
        if b.job.url is not None and b.path:
            store.mark_downloaded(b.job.id, b.path, b.sha256)
    known = {b.sha256: store.vector_for_sha256(b.sha256) for b in batch}
    todo = [b for b in batch if known[b.sha256] is None]
    vectors: dict[int, np.ndarray] = {}
    if todo:
        fresh = embedder.embed(np.stack([b.pixels for b in todo]))
        vectors.update({b.job.id: v for b, v in zip(todo, fresh, strict=True)})
    for b in batch:
        vectors.setdefault(b.job.id, known[b.sha256])
    report.embedded += len(todo)
    report.reused += len(batch) - len(todo)
    report.downloaded += sum(1 for b in batch if b.job.url is not None)
    store.add_vectors([(b.job.id, b.path, b.sha256) for b in batch], np.stack([vectors[b.job.id] for b in batch]))
