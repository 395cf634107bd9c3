"""The build operation: add a source's photos to the index in a data home (download or read, embed, commit), what
an earlier build finished skipped. The one operation that opens its own Store: it creates the index, and holds the
build lock for its whole run. Model frameworks and the network are imported inside it (opening an index stays light)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from imgidx.indexer.config import Settings
from imgidx.indexer.embedders import extend_precision, slow_precision
from imgidx.indexer.embedders.vgg16 import DEFAULT_LAYER
from imgidx.indexer.errors import InvalidArgument, StoreError
from imgidx.indexer.layout import db_file
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store

from ..results import BuildReport, Failure


class Source(Protocol):
    """Where photos come from: anything with `photos()` (imgidx.sources has Flickr, Folder and UrlList)."""

    def photos(self) -> Iterable[Photo]: ...


@dataclass(frozen=True)
class Model:
    """What the build embeds with: the options resolved against the index's own, and notes for the report."""

    layer: str
    weights: str
    precision: str | None
    runtime: str | None
    notes: tuple[str, ...]


def build(
    settings: Settings,
    source: Source,
    *,
    layer: str | None = None,
    weights: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    workers: int = 16,
    decode_workers: int | None = None,
    retry_failed: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    runtime: str | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> BuildReport:
    """Add the photos of `source` to the index in settings.home (imgidx.Index.build documents the options)."""
    check_engine(workers, engine, ray_address)
    model = resolve_model(settings, layer, weights, precision, runtime)
    from imgidx.indexer.compose import build_lock, calibration_photos, make_embedder, make_fetcher

    fetcher = make_fetcher(settings, workers)
    opened: list[Store] = []  # int8 calibrates on the index's first photos, once the store below holds them
    embedder = make_embedder(
        settings,
        model.layer,
        model.weights,
        precision=model.precision,
        batch_size=batch_size,
        runtime=model.runtime,
        flags=settings.cpu_flags,
        calibration=lambda: calibration_photos(opened[0], fetcher),
    )
    with build_lock(settings.home), Store(settings.home) as store:
        opened.append(store)
        store.remove_stale_temp_files()  # left by a killed build; we hold the lock, so nobody is writing them
        ids, photos = add_photos(store, source, embedder)
        total = len(store.pending(ids, retry_failed=retry_failed))
        local = all(p.url is None for p in photos)  # files on disk: a few readers are enough
        options = dict(
            retry_failed=retry_failed,
            workers=min(workers, 4) if local else workers,
            save_every=settings.save_every,
            on_progress=_progress(total, on_progress),
        )
        if getattr(embedder, "runtime", "keras") == "onnx":
            # export (int8: calibrate) once, before the loader threads start decoding (on a few cores they would
            # share them with the calibration, and its cost would grow with the build) and before Ray's actors,
            # which load the cached files
            embedder.load()
        if engine == "ray":
            report = _ingest_ray(store, ids, embedder, settings, batch_size, ray_address, **options)
        else:
            report = _ingest_local(store, ids, embedder, fetcher, decode_workers, **options)
        record_calibration(store, embedder)
        counts = store.counts()
    return BuildReport(
        requested=report.requested,
        already_indexed=report.already,
        failed_before=report.failed_before,
        embedded=report.embedded,
        reused=report.reused,
        downloaded=report.downloaded,
        failures=tuple(Failure(i, s, r) for i, s, r in report.skipped),
        seconds=report.seconds,
        index=counts,
        notes=model.notes,
    )


def check_engine(workers: int, engine: str, ray_address: str | None) -> None:
    """The engine options, before any work: without Ray, say how to install it."""
    from imgidx.indexer.engines import ENGINES

    if workers <= 0:
        raise InvalidArgument(f"workers must be > 0; received {workers}")
    if engine not in ENGINES:
        raise InvalidArgument(f"engine must be one of {'|'.join(ENGINES)}; received {engine!r}")
    if ray_address is not None and engine != "ray":
        raise InvalidArgument('ray_address is for engine="ray"')
    if engine == "ray":
        from imgidx.indexer.engines.ray_cluster import import_ray

        import_ray()


def resolve_model(
    settings: Settings, layer: str | None, weights: str | None, precision: str | None, runtime: str | None
) -> Model:
    """layer/weights/precision/runtime: the caller's, else the index's own, else the settings' and defaults."""
    stamp, weights_source, index_runtime = _peek(settings.home)
    # the runtime that built the index builds the rest of it: runtimes agree to cosine 0.99999, not bit for bit,
    # and a resumed build must equal an uninterrupted one bit for bit (README "Crash safety")
    runtime = runtime or index_runtime
    if weights is None:
        if stamp is not None and stamp.weights.startswith("random:"):
            weights = stamp.weights
        else:
            weights = (weights_source if stamp is not None else None) or settings.weights
    notes: list[str] = []
    if stamp is not None:  # keep adding in the index's precision, unless this CPU only emulates it
        precision = extend_precision(stamp.precision, precision, flags=settings.cpu_flags)
        if (slow := slow_precision(precision, flags=settings.cpu_flags)) is not None:
            notes.append(slow)
    return Model(layer or (stamp.layer if stamp else DEFAULT_LAYER), weights, precision, runtime, tuple(notes))


def add_photos(store: Store, source: Source, embedder: Any) -> tuple[list[int], list[Photo]]:
    """The source's photos into the catalogue, under the embedder's stamp: their ids, and the photos."""
    from imgidx.indexer.names import check as check_collection

    # the photos first: a source's error (a bad collection name) stores nothing, not even a model stamp
    photos = list(source.photos())
    for name in {p.collection for p in photos}:  # the built-in sources check theirs with more context
        check_collection(name, f"source {getattr(source, 'name', type(source).__name__)!r}")
    store.ensure_stamp(embedder.stamp)
    if embedder.weights.path:
        store.set_meta("weights_source", str(embedder.weights.path.resolve()))
    store.set_meta("runtime", getattr(embedder, "runtime", "keras"))
    return store.add_photos(photos), photos


def record_calibration(store: Store, embedder: Any) -> None:
    """int8: what calibrated the model this index's vectors come from (`info` shows it)."""
    calibration = getattr(embedder, "calibration_record", lambda: None)()
    if calibration is not None:
        store.set_meta("int8_calibration", json.dumps(calibration, sort_keys=True))


def _progress(total: int, on_progress: Callable[[int, int], None] | None) -> Callable[[int], None]:
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, total)

    return advance


def _ingest_local(store: Store, ids: Sequence[int], embedder, fetcher, decode_workers: int | None, **options):
    from imgidx.indexer.pipeline import ingest  # here: commands that need no network start faster

    return ingest(store, ids, embedder, fetcher, decode_workers=decode_workers, **options)


def _ingest_ray(store: Store, ids: Sequence[int], embedder, settings, batch_size, address: str | None, **options):
    from imgidx.indexer.engines.ray_engine import ingest_ray

    weights = _weights_for_workers(embedder)
    return ingest_ray(
        store, ids, embedder, settings, weights=weights, batch_size=batch_size, address=address, **options
    )


def _peek(home: Path) -> tuple[Stamp | None, str | None, str | None]:
    """The stamp, weights file and model runtime of an existing index; Nones for a new home, or one a killed
    first build left without a schema (the build creates it)."""
    if not db_file(home).exists():
        return None, None, None
    try:
        with Store(home, readonly=True) as store:
            if store.stamp is None:
                return None, None, None
            # an index from before runtimes were recorded was built by Keras, the only runtime then
            return store.stamp, store.meta("weights_source"), store.meta("runtime") or "keras"
    except StoreError:
        return None, None, None


def _weights_for_workers(embedder) -> str:
    """The weights as another process resolves them to the same stamp: random:SEED, or the file's absolute path."""
    spec = embedder.weights
    return spec.fingerprint if spec.kind == "random" else str(Path(spec.path).resolve())
