"""What `imgidx serve` does, without HTTP: read-only queries on the index, with the model loaded once.

Three kinds of threads share the work:
- one store thread owns the read-only Store (SQLite objects stay on the thread that opened them, and a reload
  never races a query); it reopens the store when a build beside us commits new vectors;
- one model thread (a MicroBatcher) owns the embedder: uploads that arrive together share one model call;
- the event loop's worker threads decode uploads and make thumbnails.

The API layer (imgidx/service/api.py) maps the errors below to HTTP status codes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from imgidx.indexer.compose import embedder_for_index
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ImageError, ImgidxError, StoreError
from imgidx.indexer.flow import cores
from imgidx.indexer.images import FORMATS_TEXT, TARGET_SIZE, prepare
from imgidx.indexer.layout import index_file
from imgidx.indexer.records import Stamp
from imgidx.indexer.store import Store
from imgidx.indexer.store.faiss_index import holds_committed

from .batcher import MAX_QUEUE, MicroBatcher
from .metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ServiceError(ImgidxError):
    status = 500


class BadRequest(ServiceError):
    status = 400


class UnsupportedImage(ServiceError):
    status = 415


class Unavailable(ServiceError):
    status = 503


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 32  # images per model call
    max_wait_s: float = 0.005  # how long a lone upload waits for company
    max_queue: int = MAX_QUEUE  # uploads waiting for the model before we answer 503 (batcher.MAX_QUEUE)
    refresh_s: float = 2.0  # how often to look for a build's new commits
    max_k: int = 1000

    def __post_init__(self) -> None:
        if self.refresh_s < 0:
            raise ValueError(f"refresh_s must be >= 0; received {self.refresh_s}")
        if self.max_k <= 0:
            raise ValueError(f"max_k must be > 0; received {self.max_k}")


class StoreThread:
    """Runs functions of the read-only Store on one thread; reopens it when the index on disk changes."""

    def __init__(self, home: Path, refresh_s: float, on_open: Callable[[Store], None]):
        self.home, self.refresh_s, self.on_open = home, refresh_s, on_open
        self.generation = 0  # bumped at every (re)open: cache keys include it
        self.vectors_generation = 0  # bumped when the store is opened anew (not for a metadata-only commit)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="imgidx-store")
        self._store: Store | None = None
        self._signature: tuple = ()
        self._checked = 0.0
        self._reopen_s = 0.0  # how long the last (re)open took

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, args)

    def close(self) -> None:
        def _close() -> None:
            if self._store is not None:
                self._store.close()

        self._pool.submit(_close).result()
        self._pool.shutdown()

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        if self._store is None:
            _single_threaded_faiss()
        self._maybe_reopen()
        assert self._store is not None
        return fn(self._store, *args)

    def _maybe_reopen(self) -> None:
        now = time.monotonic()
        # a reopen reads the whole FAISS file: during a long build of a big index, reopen less often than that costs
        if self._store is not None and now - self._checked < max(self.refresh_s, 20 * self._reopen_s):
            return
        self._checked = now
        if self._store is not None:
            signature = self._current_signature(self._store)
            if signature == self._signature:
                return
            index = self._store.faiss.index
            if signature[1] == self._signature[1] and index is not None and holds_committed(index, self._store):
                # metadata only (a review, `clean --apply`, a rename): SQLite shows it to the next query; the
                # loaded index still holds exactly the committed vectors, so the whole file is not read again
                self._signature = signature
                self.generation += 1
                self.on_open(self._store)
                return
        try:
            start = time.monotonic()
            fresh = Store(self.home, readonly=True)
            fresh.index  # noqa: B018  load (and catch up) the FAISS index now, not in the next query
            self._reopen_s = time.monotonic() - start
        except StoreError:
            if self._store is None:
                raise
            logger.warning("could not reopen the index in %s; still serving the previous one", self.home)
            return
        old, self._store = self._store, fresh
        self._signature = self._current_signature(fresh)
        self.generation += 1
        self.vectors_generation += 1
        if old is not None:
            old.close()
            logger.info("reopened the index in %s (it changed on disk)", self.home)
        self.on_open(fresh)

    def _current_signature(self, store: Store) -> tuple:
        """Changes when another connection commits (a build beside us) or the FAISS file is replaced."""
        version = store.data_version()
        try:
            mtime = os.stat(index_file(store.home)).st_mtime_ns
        except OSError:
            mtime = 0
        return (version, mtime)


WRITE_BUSY_S = 5.0  # how long a review waits for a build's write transaction before answering 503


class Writer:
    """Short-lived read-write connections for the few writes of the service (reviews), on their own thread: the
    store thread keeps its read-only store. WAL lets this one writer commit beside a running build (SQLite's
    busy timeout makes it wait its turn); the build lock is never taken, so a build is never blocked for long."""

    def __init__(self, home: Path, busy_s: float = WRITE_BUSY_S):
        self.home, self.busy_s = home, busy_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="imgidx-writer")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        from imgidx.indexer.layout import db_file
        from imgidx.indexer.store.catalog import Catalog

        if not db_file(self.home).exists():  # never create a store from the service
            raise Unavailable(f"no index in {self.home} yet; build it with `imgidx build`")
        catalog = Catalog(self.home, timeout=self.busy_s)
        try:
            return fn(catalog, *args)
        finally:
            catalog.close()

    def close(self) -> None:
        self._pool.shutdown()


class Service:
    def __init__(self, settings: Settings, options: ServeOptions | None = None, metrics: Metrics | None = None):
        self.settings = settings
        self.options = options or ServeOptions()
        self.metrics = metrics or Metrics()
        self.stats = {"photos": 0, "collections": 0}
        self.started_at = time.time()
        self.store = StoreThread(settings.home, self.options.refresh_s, self._opened)
        self.writer = Writer(settings.home)
        self._stamp: Stamp | None = None
        self._batcher: MicroBatcher | None = None
        self._batcher_stamp: Stamp | None = None
        self._batcher_lock = asyncio.Lock()
        # about one decode per core: a decode is CPU-bound and can hold a few hundred MB (up to the decoded-bytes
        # cap), so uploads beyond that wait here, without holding a worker thread, instead of multiplying memory
        self._decodes = asyncio.Semaphore(cores())
        self._register_metrics()

    # ---- life cycle ------------------------------------------------------------------------------------------
    async def start(self, *, warm: bool = True) -> None:
        """Open the index and load the model (with one dummy image) before the first request arrives."""
        await self.store.run(lambda store: None)  # opens the index
        if warm and self._stamp is not None:
            await self.embed_pixels(np.zeros((TARGET_SIZE, TARGET_SIZE, 3), dtype=np.uint8))

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        self.store.close()
        self.writer.close()

    def _opened(self, store: Store) -> None:  # on the store thread, at every reopen (a review's commit too)
        # two cheap counts, not store.counts(): its per-collection joins read every membership of every photo
        self.stats = {"photos": store.vector_count(), "collections": len(store.collection_names())}
        self._stamp = store.stamp

    @property
    def stamp(self) -> Stamp | None:
        return self._stamp

    @property
    def model_loaded(self) -> bool:
        return self._batcher is not None

    # ---- the model -------------------------------------------------------------------------------------------
    async def embed_bytes(self, data: bytes) -> npt.NDArray[np.float32]:
        from starlette.concurrency import run_in_threadpool

        async with self._decodes:
            pixels = await run_in_threadpool(decode_upload, data)
        return await self.embed_pixels(pixels)

    async def embed_pixels(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        batcher = await self._current_batcher()
        return await batcher(pixels)

    async def _current_batcher(self) -> MicroBatcher:
        stamp = self._stamp
        if stamp is None:
            raise Unavailable(f"the index in {self.settings.home} has no photos yet; build it with `imgidx build`")
        if self._batcher is not None and self._batcher_stamp == stamp:
            return self._batcher
        async with self._batcher_lock:  # one model, built once (again only if the index was rebuilt)
            if self._batcher is None or self._batcher_stamp != stamp:
                embedder = await self.store.run(
                    lambda store: embedder_for_index(store, self.settings, batch_size=self.options.max_batch)
                )
                old = self._batcher
                self._batcher = MicroBatcher(
                    query_embed(embedder),
                    max_batch=self.options.max_batch,
                    max_wait_s=self.options.max_wait_s,
                    max_queue=self.options.max_queue,
                    name="imgidx-model",
                    on_batch=self._batch_done,
                )
                self._batcher_stamp = stamp
                if old is not None:
                    old.close()
        return self._batcher

    def _batch_done(self, size: int, seconds: float) -> None:
        self.metrics.inc("imgidx_model_calls_total")
        self.metrics.inc("imgidx_model_images_total", size)
        self.metrics.observe("imgidx_model_batch_size", size)
        self.metrics.observe("imgidx_model_call_seconds", seconds)

    # ---- metrics ---------------------------------------------------------------------------------------------
    def _register_metrics(self) -> None:
        m = self.metrics
        m.counter("imgidx_requests_total", "HTTP requests by method, route and status code.")
        m.histogram("imgidx_request_duration_seconds", "HTTP request latency by route.", LATENCY_BUCKETS)
        m.counter("imgidx_model_calls_total", "Calls of the embedding model (one per micro-batch).")
        m.counter("imgidx_model_images_total", "Images embedded.")
        m.histogram("imgidx_model_batch_size", "Images per model call.", BATCH_BUCKETS)
        m.histogram("imgidx_model_call_seconds", "Duration of one model call.", LATENCY_BUCKETS)
        m.gauge("imgidx_index_vectors", "Vectors in the served index.", lambda: self.stats["photos"])
        m.gauge("imgidx_index_collections", "Collections in the served index.", lambda: self.stats["collections"])
        m.gauge("imgidx_index_generation", "Times the index was (re)opened.", lambda: self.store.generation)
        m.gauge("imgidx_model_loaded", "1 once the embedding model is loaded.", lambda: int(self.model_loaded))
        m.gauge("imgidx_uptime_seconds", "Seconds since the service started.", lambda: time.time() - self.started_at)


def query_embed(embedder: Any) -> Callable[[list], list]:
    """The model call for queries: exactly the images that arrived together, never padded to the build's batch
    size. (Builds pad every batch to one shape so that a photo's stored vector is bit-for-bit the same however
    the run was batched; a query only needs the same model, and a lone upload would otherwise pay for 32.) The
    Keras embedder's `raw` takes any batch size; an embedder without it falls back to `embed`."""
    raw = getattr(embedder, "raw", None)
    if raw is None:
        return lambda items: list(embedder.embed(np.stack(items)))

    def call(items: list) -> list:
        features = np.asarray(raw(np.stack(items)), dtype=np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return list(features / np.maximum(norms, 1e-12))  # unit vectors, as embed() gives

    return call


def _single_threaded_faiss() -> None:
    """One query at a time runs far faster on one OpenMP thread (0.03 ms against 1.2 ms for a small flat index
    on 2 cores): waking the pool costs more than the search, and the model thread needs the cores anyway."""
    import faiss

    faiss.omp_set_num_threads(1)


def decode_upload(data: bytes) -> npt.NDArray[np.uint8]:
    """Uploaded bytes -> 224x224 RGB, or a 415 (not an image at all) / 400 (an image we cannot use)."""
    try:
        return prepare(data)
    except ImageError as e:
        if e.reason.startswith("not "):
            raise UnsupportedImage(f"the upload is not an image ({e.reason}); send a {FORMATS_TEXT} file") from None
        raise BadRequest(f"the upload cannot be used as a photo: {e.reason}") from None
