"""ingest(): the local engine's loop (engines/ray_engine.py is the other; both start with plan() and end in the
one Committer). Fetch/read, decode and embed overlap: downloads in I/O threads, decoding in about one
thread per core (flow.two_stage), the model on the caller's thread.

Stages are joined by a bounded window, so memory stays bounded however many photos there are, and the model is
handed full batches without waiting for the network or the decoder. One photo's failure is recorded with its
reason and never stops the run. Every batch is committed (vectors + states) before the next one starts; the
FAISS file is saved every `save_every` seconds and at the end.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import layout
from .atomic import write_bytes
from .embedders import Embedder
from .errors import ImageError
from .fetch import Fetcher
from .flow import cores, two_stage
from .images import image_format, prepare
from .store import Store
from .store.faiss_index import DISK_FULL, write_error

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
    vector: np.ndarray | None = None  # embedded by an engine before the commit (Ray); the local engine embeds there


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
                raise write_error(layout.photos_folder(self.home), e) from None
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
        existing = layout.existing_photo(self.home, job.source, job.source_id)
        if existing is not None:  # downloaded by an earlier run: never fetch twice
            return existing.read_bytes(), layout.stored_path(self.home, existing), None, False
        got = self.fetcher.fetch(job.url)
        if got.data is None:
            return None, "", got.error, got.retry_later  # stored: --retry-failed tries these again
        ext = image_format(got.data)
        if ext == "bin":
            return got.data, "", None, False  # not an image: decode records why; nothing worth keeping on disk
        target = layout.photo_file(self.home, job.source, job.source_id, ext)
        write_bytes(target, got.data)
        return got.data, layout.stored_path(self.home, target), None, False


def plan(store: Store, photo_ids: Sequence[int], *, retry_failed: bool) -> tuple[IngestReport, list[Job]]:
    """What a build of `photo_ids` has left to do: the jobs, and a report that counts what earlier runs did.

    Every engine starts here, so photos the store already has are never handed to a loader again."""
    rows = store.pending(photo_ids, retry_failed=retry_failed)
    states = store.states(photo_ids)
    report = IngestReport(requested=len(states))
    report.already = sum(1 for st in states.values() if st in ("embedded", "indexed"))
    report.failed_before = len(states) - report.already - len(rows)
    return report, [Job(r["id"], r["source"], r["source_id"], r["url"], r["path"]) for r in rows]


Embed = Callable[[list[Loaded]], np.ndarray]  # a batch's items -> their unit vectors, in order


class Committer:
    """The one commit step of every engine: takes loaded photos in any order, records failures at once, commits
    the rest batch by batch (vectors + states in one transaction) and saves the FAISS file every `save_every`
    seconds and at the end. `embed` turns a batch into vectors: the model here (local engine), or vectors an
    engine computed elsewhere and carries on the items (Ray)."""

    def __init__(
        self,
        store: Store,
        report: IngestReport,
        embed: Embed,
        batch_size: int,
        *,
        save_every: float = 60.0,
        on_progress: Callable[[int], None] | None = None,
    ):
        self.store, self.report, self.embed, self.batch_size = store, report, embed, batch_size
        self.save_every, self.on_progress = save_every, on_progress
        self.batch: list[Loaded] = []
        self.last_save = time.monotonic()

    def add(self, item: Loaded) -> None:
        if item.error is not None:
            self.store.mark_failed([(item.job.id, item.error, item.retryable)])
            self.report.skipped.append((item.job.id, item.job.source_id, item.error))
            log.info("skipping %s: %s", item.job.source_id, item.error)
        else:
            self.batch.append(item)
        if len(self.batch) >= self.batch_size:
            self._commit()
        if self.on_progress:
            self.on_progress(1)
        if time.monotonic() - self.last_save > self.save_every:
            self.store.save_index()
            self.last_save = time.monotonic()

    def finish(self) -> None:
        if self.batch:
            self._commit()
        self.store.save_index()

    def _commit(self) -> None:
        """Embed one batch (reusing vectors of identical bytes) and commit it in one transaction."""
        store, batch, report, self.batch = self.store, self.batch, self.report, []
        for b in batch:
            if b.job.url is not None and b.path:
                store.mark_downloaded(b.job.id, b.path, b.sha256)
        known = {b.sha256: store.vector_for_sha256(b.sha256) for b in batch}
        todo = [b for b in batch if known[b.sha256] is None]
        vectors: dict[int, np.ndarray] = {}
        if todo:
            vectors.update({b.job.id: v for b, v in zip(todo, self.embed(todo), strict=True)})
        for b in batch:
            vectors.setdefault(b.job.id, known[b.sha256])
        report.embedded += len(todo)
        report.reused += len(batch) - len(todo)
        report.downloaded += sum(1 for b in batch if b.job.url is not None)
        store.add_vectors([(b.job.id, b.path, b.sha256) for b in batch], np.stack([vectors[b.job.id] for b in batch]))


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
    """Download, decode, embed and index the given photos; skip what an earlier run finished (the local engine).

    workers: concurrent downloads/reads (default the fetcher's); decode_workers: decode threads (default: cores)."""
    start = time.monotonic()
    store.ensure_stamp(embedder.stamp)
    report, jobs = plan(store, photo_ids, retry_failed=retry_failed)
    loader = Loader(store.home, fetcher)

    def embed(items: list[Loaded]) -> np.ndarray:
        return embedder.embed(np.stack([b.pixels for b in items]))

    committer = Committer(store, report, embed, embedder.batch_size, save_every=save_every, on_progress=on_progress)
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
        committer.add(item)
    committer.finish()
    report.seconds = time.monotonic() - start
    return report
