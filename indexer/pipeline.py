"""ingest(): the only loop. Fetch/read + decode run in worker threads while the model embeds on the caller's thread.

Stages are joined by a bounded queue, so memory stays bounded however many photos there are, and the model is
handed full batches without waiting for the network. One photo's failure is recorded with its reason and never
stops the run. Every batch is committed (vectors + states) before the next one starts; the FAISS file is saved
every `save_every` seconds and at the end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .embed import Embedder
from .errors import ImageError
from .fetch import Fetcher
from .images import image_format, prepare
from .index_file import DISK_FULL, write_error
from .store import Store

log = logging.getLogger(__name__)
_DONE = object()


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
    """Turns a Job into pixels: download (or reuse the file already on disk) or read, then decode. Never raises."""

    def __init__(self, home: Path, fetcher: Fetcher):
        self.home, self.fetcher = Path(home), fetcher

    def __call__(self, job: Job) -> Loaded:
        try:
            data, path, error, retryable = self._bytes(job)
        except OSError as e:
            if e.errno in DISK_FULL:  # every later photo would fail the same way: stop the run, keep what is done
                raise write_error(self.home / "photos", e) from None
            return Loaded(job, error=f"cannot write the photo under {self.home} ({e.strerror or e})", retryable=True)
        if data is None:
            return Loaded(job, error=error, retryable=retryable)
        sha = hashlib.sha256(data).hexdigest()
        try:
            return Loaded(job, path, sha, prepare(data))
        except ImageError as e:
            return Loaded(job, path, sha, error=e.reason)

    def _bytes(self, job: Job) -> tuple[bytes | None, str, str | None, bool]:
        if job.source == "folder":
            try:
                return Path(job.path or "").read_bytes(), job.path or "", None, False
            except OSError as e:
                return None, "", f"cannot read {job.path} ({e.strerror or e})", False
        existing = self._existing_file(job)
        if existing is not None:  # downloaded by an earlier run: never fetch twice
            return existing.read_bytes(), str(existing.relative_to(self.home)), None, False
        got = self.fetcher.fetch(job.url)
        if got.data is None:
            return None, "", got.error, got.retryable
        ext = image_format(got.data)
        if ext == "bin":
            return got.data, "", None, False  # not an image: decode records why; nothing worth keeping on disk
        target = self._folder(job) / f"{job.source_id}.{ext}"
        write_atomic(target, got.data)
        return got.data, str(target.relative_to(self.home)), None, False

    def _folder(self, job: Job) -> Path:
        if not (job.source_id.isascii() and job.source_id.isdigit()):  # names from ASCII digits only, never text
            raise OSError(f"refusing a non-numeric photo id {job.source_id!r} as a file name")
        return self.home / "photos" / job.source / job.source_id[-2:].rjust(2, "0")

    def _existing_file(self, job: Job) -> Path | None:
        folder = self._folder(job)
        if not folder.is_dir():
            return None
        return next((p for p in folder.glob(f"{job.source_id}.*") if not p.name.endswith(".tmp")), None)


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
    retry_failed: bool = False,
    save_every: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Download, decode, embed and index the given photos; skip what an earlier run finished."""
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
    for item in _background(
        bounded_map(loader, jobs, workers or fetcher.workers, window=4 * embedder.batch_size),
        maxsize=2 * embedder.batch_size,
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
        if b.job.source == "flickr" and b.path:
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
    report.downloaded += sum(1 for b in batch if b.job.source == "flickr")
    store.add_vectors([(b.job.id, b.path, b.sha256) for b in batch], np.stack([vectors[b.job.id] for b in batch]))


def bounded_map(fn: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """Like executor.map, but at most `window` items in flight and results in completion order."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgidx-load") as ex:
        pending: set = set()
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    pending.add(ex.submit(fn, next(it)))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)


def _background(gen: Iterator, maxsize: int) -> Iterator:
    """Run a generator on a thread, handing items over through a bounded queue (so loading overlaps the model)."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - re-raised on the consumer's thread
            q.put(e)

    t = threading.Thread(target=run, name="imgidx-producer", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
