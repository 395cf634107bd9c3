"""`Index`: the public Python API of imgidx. The CLI (imgidx.cli) and the HTTP service (imgidx.service) are thin
faces over it and over the store-level operations it uses (imgidx.ops).

Opening an index reads nothing and imports no model framework; each call opens the store for its own duration
(read-only unless it writes, under the build lock when it does). The embedding model is built on first need,
from the index's own stamp, and kept for later calls.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from imgidx import ops
from imgidx.indexer import ann
from imgidx.indexer.config import Settings
from imgidx.indexer.embedders import extend_precision, slow_precision
from imgidx.indexer.embedders.vgg16 import DEFAULT_LAYER
from imgidx.indexer.errors import InvalidArgument, NoIndexError, StoreError
from imgidx.indexer.layout import db_file
from imgidx.indexer.records import Photo, Stamp
from imgidx.indexer.store import Store
from imgidx.ops import describe, nearest
from imgidx.search.knn import member_ids

from .results import (
    AuditReport,
    BuildReport,
    CleanReport,
    CollectionInfo,
    Failure,
    IndexInfo,
    Neighbour,
    PhotoInfo,
    Prediction,
    ReindexReport,
    Review,
    ReviewQueue,
    TrainReport,
)

if TYPE_CHECKING:
    from imgidx.indexer.embed import Embedder
    from imgidx.indexer.verify import Report as VerifyReport
    from imgidx.search.classifier import Classifiers
    from imgidx.search.duplicates import Duplicates
    from imgidx.search.export import ExportResult

PhotoInput = str | os.PathLike[str] | bytes  # a photo file, or its bytes


class Source(Protocol):
    """Where photos come from: anything with `photos()` (imgidx.sources has Flickr and Folder)."""

    def photos(self) -> Iterable[Photo]: ...


def open(home: str | os.PathLike[str] | None = None, settings: Settings | None = None) -> Index:  # noqa: A001
    """The index in `home` (default: settings.home, i.e. $IMGIDX_HOME or ./data). Reads nothing yet."""
    return Index(home, settings=settings)


class Index:
    def __init__(self, home: str | os.PathLike[str] | None = None, *, settings: Settings | None = None):
        settings = settings or Settings.from_env()
        self.settings = settings if home is None else settings.with_options(home=Path(home))
        self._embedders: dict[int, Embedder] = {}  # by batch size; valid while the index's stamp is theirs
        self._saved_classifiers: Classifiers | None = None  # made on first use (classify)

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def _classifiers(self) -> Classifiers:
        # imported and made here: only classify needs them, and the CLI makes an Index for every command
        if self._saved_classifiers is None:
            from imgidx.search.classifier import Classifiers

            self._saved_classifiers = Classifiers(self.home)
        return self._saved_classifiers

    def __repr__(self) -> str:
        return f"imgidx.Index({str(self.home)!r})"

    # ---- store access -------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return db_file(self.home).exists()

    @contextmanager
    def _reading(self) -> Iterator[Store]:
        if not self.exists():
            raise NoIndexError(f"no index in {self.home}; build one first")
        with Store(self.home, readonly=True) as store, store.snapshot():
            yield store

    @contextmanager
    def _writing(self, *, lock: bool = False) -> Iterator[Store]:
        """lock: hold the build lock too (for changes to the FAISS index; metadata writes share SQLite's lock)."""
        if not self.exists():
            raise NoIndexError(f"no index in {self.home}; build one first")
        from imgidx.indexer.compose import build_lock  # the model side: imported by the calls that need it

        with build_lock(self.home) if lock else nullcontext(), Store(self.home) as store:
            yield store

    # ---- the model ----------------------------------------------------------------------------------------------
    def embedder(self, *, layer: str | None = None, weights: str | None = None, batch_size: int = 32) -> Embedder:
        """The model that reproduces the index's vectors (built, not yet loaded). `layer`/`weights`, when given,
        must agree with the index's stamp (StampMismatch otherwise)."""
        with self._reading() as store:
            return self._embedder(store, batch_size, layer=layer, weights=weights)

    def _embedder(self, store: Store, batch_size: int, *, layer: str | None = None, weights: str | None = None):
        cached = self._embedders.get(batch_size)
        if layer is None and weights is None and cached is not None and cached.stamp == store.stamp:
            return cached
        from imgidx.indexer.compose import embedder_for_index

        emb = embedder_for_index(store, self.settings, layer=layer, weights=weights, batch_size=batch_size)
        self._embedders[batch_size] = emb
        return emb

    def _embed(self, store: Store, photos: Sequence[PhotoInput]) -> npt.NDArray[np.float32]:
        pixels = np.stack([_pixels(p) for p in photos])
        # the model pads every call to its batch size: one photo, one row
        return self._embedder(store, min(32, len(photos))).embed(pixels)

    # ---- build --------------------------------------------------------------------------------------------------
    def build(
        self,
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
        """Add the photos of `source` (download or read, embed, index); what an earlier build finished is skipped.

        layer/weights/precision default to the index's own (for a new index: fc2, settings.weights, and the
        device's precision); an index whose precision this CPU only emulates (bf16 without AMX) is extended only
        when that precision is asked for explicitly. runtime: keras | onnx | auto (default: settings.runtime; auto
        measures once per machine which is faster). on_progress(done, total) is called as photos are processed.

        engine: "local" (threads and the model in this process) or "ray" (fetch, decode and embed on Ray; needs
        `pip install 'imgidx[ray]'`): a local Ray with this machine's cores, or the cluster at ray_address. The
        index is the same whichever engine builds it (this process commits every batch)."""
        from imgidx.indexer.engines import ENGINES
        from imgidx.indexer.names import check as check_collection
        from imgidx.indexer.pipeline import ingest  # here: commands that need no network start faster

        if workers <= 0:
            raise InvalidArgument(f"workers must be > 0; received {workers}")
        if engine not in ENGINES:
            raise InvalidArgument(f"engine must be one of {'|'.join(ENGINES)}; received {engine!r}")
        if ray_address is not None and engine != "ray":
            raise InvalidArgument('ray_address is for engine="ray"')
        if engine == "ray":
            from imgidx.indexer.engines.ray_cluster import import_ray

            import_ray()  # before any work: without Ray, say how to install it
        stamp, weights_source, index_runtime = self._peek()
        # the runtime that built the index builds the rest of it: runtimes agree to cosine 0.99999, not bit for bit,
        # and a resumed build must equal an uninterrupted one bit for bit (README "Crash safety")
        runtime = runtime or index_runtime
        if weights is None:
            if stamp is not None and stamp.weights.startswith("random:"):
                weights = stamp.weights
            else:
                weights = (weights_source if stamp is not None else None) or self.settings.weights
        layer = layer or (stamp.layer if stamp else DEFAULT_LAYER)
        notes: list[str] = []
        if stamp is not None:  # keep adding in the index's precision, unless this CPU only emulates it
            precision = extend_precision(stamp.precision, precision, flags=self.settings.cpu_flags)
            if (slow := slow_precision(precision, flags=self.settings.cpu_flags)) is not None:
                notes.append(slow)
        from imgidx.indexer.compose import build_lock, calibration_photos, make_embedder, make_fetcher

        fetcher = make_fetcher(self.settings, workers)
        opened: list[Store] = []  # int8 calibrates on the index's first photos, once the store below holds them
        embedder = make_embedder(
            self.settings,
            layer,
            weights,
            precision=precision,
            batch_size=batch_size,
            runtime=runtime,
            flags=self.settings.cpu_flags,
            calibration=lambda: calibration_photos(opened[0], fetcher),
        )
        with build_lock(self.home), Store(self.home) as store:
            opened.append(store)
            store.remove_stale_temp_files()  # left by a killed build; we hold the lock, so nobody is writing them
            # the photos first: a source's error (a bad collection name) stores nothing, not even a model stamp
            photos = list(source.photos())
            for name in {p.collection for p in photos}:  # the built-in sources check theirs with more context
                check_collection(name, f"source {getattr(source, 'name', type(source).__name__)!r}")
            store.ensure_stamp(embedder.stamp)
            if embedder.weights.path:
                store.set_meta("weights_source", str(embedder.weights.path.resolve()))
            store.set_meta("runtime", getattr(embedder, "runtime", "keras"))
            ids = store.add_photos(photos)
            total = len(store.pending(ids, retry_failed=retry_failed))
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                if on_progress is not None:
                    on_progress(done, total)

            local = all(p.url is None for p in photos)  # files on disk: a few readers are enough
            if engine == "ray":
                from imgidx.indexer.engines.ray_engine import ingest_ray

                if getattr(embedder, "runtime", "keras") == "onnx":
                    embedder.load()  # export (and int8: calibrate) once here; the actors load the cached files
                report = ingest_ray(
                    store,
                    ids,
                    embedder,
                    self.settings,
                    weights=_weights_for_workers(embedder),
                    batch_size=batch_size,
                    workers=min(workers, 4) if local else workers,
                    retry_failed=retry_failed,
                    save_every=self.settings.save_every,
                    on_progress=advance,
                    address=ray_address,
                )
            else:
                if getattr(embedder, "runtime", "keras") == "onnx":
                    # export (int8: calibrate) before the loader threads start decoding: on a few cores they would
                    # share them with the calibration, and its cost would grow with the size of the build
                    embedder.load()
                report = ingest(
                    store,
                    ids,
                    embedder,
                    fetcher,
                    retry_failed=retry_failed,
                    workers=min(workers, 4) if local else workers,
                    save_every=self.settings.save_every,
                    decode_workers=decode_workers,
                    on_progress=advance,
                )
            calibration = getattr(embedder, "calibration_record", lambda: None)()
            if calibration is not None:  # int8: what calibrated the model this index's vectors come from (`info`)
                store.set_meta("int8_calibration", json.dumps(calibration, sort_keys=True))
            counts = store.counts()
        self._embedders.clear()  # a new index may have a new stamp
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
            notes=tuple(notes),
        )

    def _peek(self) -> tuple[Stamp | None, str | None, str | None]:
        """The stamp, weights file and model runtime of an existing index; Nones for a new home, or one a killed
        first build left without a schema (the build creates it)."""
        if not self.exists():
            return None, None, None
        try:
            with Store(self.home, readonly=True) as store:
                if store.stamp is None:
                    return None, None, None
                # an index from before runtimes were recorded was built by Keras, the only runtime then
                return store.stamp, store.meta("weights_source"), store.meta("runtime") or "keras"
        except StoreError:
            return None, None, None

    # ---- queries ------------------------------------------------------------------------------------------------
    def similar(
        self,
        photo: PhotoInput | None = None,
        *,
        id: int | None = None,  # noqa: A002
        vector: npt.ArrayLike | None = None,
        k: int = 10,
        collection: str | None = None,
        include_flagged: bool = False,
    ) -> list[Neighbour]:
        """The k nearest photos, best first, to a photo (file or bytes), an indexed photo's id, or a vector.

        With `collection`, only its members, leaving out those a stored clean flagged unless include_flagged."""
        if sum(x is not None for x in (photo, id, vector)) != 1:
            raise InvalidArgument("give exactly one of a photo, id= or vector=")
        with self._reading() as store:
            if id is not None:
                query = ops.stored_vectors(store, [_photo_id(id)])[0]
            elif vector is not None:
                query = ops.query_vector(store, vector)
            else:
                assert photo is not None
                query = self._embed(store, [photo])[0]
            return nearest(store, query, k, collection=collection, include_flagged=include_flagged)

    def photo(self, id: int) -> PhotoInfo:  # noqa: A002
        with self._reading() as store:
            return ops.photo_info(store, _photo_id(id))

    def vectors(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """The stored unit vectors of indexed photos, in the order of `ids`."""
        with self._reading() as store:
            return ops.stored_vectors(store, [_photo_id(i) for i in ids])

    def collections(self) -> list[CollectionInfo]:
        with self._reading() as store:
            return ops.collections(store)

    def info(self) -> IndexInfo:
        """Collections and counts, the model stamp, the index kind and size, failures."""
        with self._reading() as store:
            counts = store.counts()
            stamp = store.stamp
            return IndexInfo(
                home=str(self.home),
                photos=counts["photos"],
                collections=counts["collections"],
                clean=counts["clean"],
                stamp=stamp.as_dict() if stamp else None,
                stamp_text=stamp.describe() if stamp else None,
                index={**store.describe_index(), "requested": store.index_kind},
                states=counts["states"],
                failures=counts["failures"],
                failed=tuple(dict(r) for r in store.failures()),
                calibration=_json_or_none(store.meta("int8_calibration")),
            )

    # ---- clean and audit ----------------------------------------------------------------------------------------
    def clean(
        self,
        collection: str,
        *,
        iterations: int = 5,
        drop: int | None = None,
        threshold: str | float = "auto",
        against: str | None = None,
        apply: bool = False,
        method: str = "auto",
        classifier: str | None = "auto",
        use_reviews: bool = True,
    ) -> CleanReport:
        """Rank a collection from typical to outlier and flag the outliers (seed 003 §9.6's loop, and more).

        drop=N flags the N farthest; threshold is "auto" (median + 3 MAD) or a distance; `against` measures
        distance to another collection's robust centroid. apply=True stores the flags: flagged photos then
        leave similar(collection=...), training and the clean counts (undo_clean removes them).
        method "auto" also uses the index's other collections and a saved classifier ("auto", a name or None),
        and each row says why it is flagged; "centroid" is the seed's loop alone.
        The collection's reviews are labels (use_reviews=False: the cut alone): a reviewed photo keeps its
        decision, and the others are re-judged with what the decisions teach (search/reviewed.py)."""
        options = dict(iterations=iterations, drop=drop, threshold=threshold, against=against)
        options.update(method=method, classifier=classifier, use_reviews=use_reviews)
        if apply:
            with self._writing() as store:
                report = ops.clean_report(store, collection, **options)
                ops.apply_clean(store, report)
            return replace(report, applied=True)
        with self._reading() as store:
            return ops.clean_report(store, collection, **options)

    def undo_clean(self, collection: str) -> int:
        """Remove the stored clean flags (and ranks) of a collection; returns how many of its photos had them."""
        with self._writing() as store:
            return store.clear_flags(collection)

    # ---- human review -------------------------------------------------------------------------------------------
    def review(
        self,
        collection: str,
        photo_id: int,
        decision: str,
        *,
        reviewer: str = "anonymous",
        source: str = "clean",
    ) -> Review:
        """A person's decision on a photo's flag in `collection`: "flag" (accept: it leaves similar(collection=...),
        training, export and the clean counts) or "keep" (overrule: it stays, however clean or duplicates flag it
        later). Stored with who and when, apart from the automatic flags: apply runs and undo_clean/undo_duplicates
        leave it alone. source: the view it was made in ("clean" | "duplicates" | "audit")."""
        with self._writing() as store:
            return ops.review(store, collection, _photo_id(photo_id), decision, reviewer=reviewer, source=source)

    def review_photos(
        self,
        collection: str,
        photo_ids: Sequence[int],
        decision: str,
        *,
        reviewer: str = "anonymous",
        source: str = "clean",
    ) -> list[Review]:
        """review() on several photos at once: all are checked before any decision is stored."""
        with self._writing() as store:
            ids = [_photo_id(p) for p in photo_ids]
            return ops.review_photos(store, collection, ids, decision, reviewer=reviewer, source=source)

    def undo_reviews(self, collection: str, photo_ids: Sequence[int]) -> list[Review | None]:
        """undo_review() on several photos at once; the decisions that count now."""
        with self._writing() as store:
            return ops.undo_reviews(store, collection, [_photo_id(p) for p in photo_ids])

    def review_next(
        self, collection: str, n: int = 10, *, method: str = "auto", classifier: str | None = "auto"
    ) -> ReviewQueue:
        """The n unreviewed photos of `collection` whose decisions would teach the clean cut most: the least
        certain ones, spread over the collection (search/reviewed.py)."""
        with self._reading() as store:
            evidence = ops.clean_evidence(store, collection, method=method, classifier=classifier)
            return ops.review_queue(store, evidence, n)

    def undo_review(self, collection: str, photo_id: int) -> Review | None:
        """Withdraw the newest decision on a photo; returns the decision that counts now (None: the automatic one)."""
        with self._writing() as store:
            return ops.undo_review(store, collection, _photo_id(photo_id))

    def reviews(self, collection: str, *, history: bool = False) -> list[Review]:
        """The decision that counts for each reviewed photo of `collection` (every decision, oldest first, with
        history=True)."""
        with self._reading() as store:
            return ops.reviews(store, collection, history=history)

    # ---- duplicates and export ---------------------------------------------------------------------------------
    def duplicates(
        self,
        collections: Sequence[str] = (),
        *,
        threshold: str | float = "auto",
        apply: bool = False,
        pixel_check: bool = True,
    ) -> Duplicates:
        """Groups of photos that are the same picture (search/duplicates.py): `exact` (same bytes) or `near`
        (re-encoded, resized, slightly cropped, watermarked, colour-tweaked). Keep policy per group: largest
        original, then most permissive licence, then earliest upload, then lowest id. apply=True flags the
        others on all their collections (reason "duplicate of ID"; undo_duplicates removes them)."""
        from imgidx.search import dataset

        if apply:
            with self._writing() as store:
                result = dataset.duplicates(store, collections, threshold=threshold, pixel_check=pixel_check)
                dataset.apply(store, result)
                return result
        with self._reading() as store:
            return dataset.duplicates(store, collections, threshold=threshold, pixel_check=pixel_check)

    def undo_duplicates(self, collections: Sequence[str] = ()) -> int:
        """Remove the flags duplicates(apply=True) stored (clean's stay); returns how many memberships had one."""
        from imgidx.search import dataset

        with self._writing() as store:
            return dataset.undo(store, collections)

    def export(
        self,
        out: str | os.PathLike[str],
        collections: Sequence[str] = (),
        *,
        format: str = "imagefolder",  # noqa: A002 - the name users know from the CLI
        split: str | Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        licenses: Sequence[int] | None = None,
        include_flagged: bool = False,
        threshold: str | float = "auto",
        embed: bool = True,
        shard_size: int | None = None,
        command: str = "",
    ) -> ExportResult:
        """Write the collections as imagefolder, parquet or webdataset with a dataset card (README.md),
        ATTRIBUTION.csv and manifest.json (search/export.py); duplicate groups never straddle splits, flagged
        photos stay out unless asked. embed=False: parquet keeps paths to DIR/images/ instead of the image bytes;
        shard_size: webdataset samples per shard at most (default 1,000; at least 8 shards per split);
        command: what made it, written into the card (default: this call)."""
        from imgidx._version import __version__
        from imgidx.search import dataset

        with self._reading() as store:
            return dataset.export_collections(
                store,
                Path(out),
                collections,
                format=format,
                split=split,
                seed=seed,
                licenses=licenses,
                include_flagged=include_flagged,
                threshold=threshold,
                version=__version__,
                embed=embed,
                shard_size=shard_size,
                command=command,
            )

    def audit(self, collections: Sequence[str], k: int = 10) -> AuditReport:
        """Label noise across collections: photos closer to another collection, or whose neighbours are another's."""
        with self._reading() as store:
            return ops.audit(store, collections, k)

    # ---- classifiers --------------------------------------------------------------------------------------------
    def train(
        self,
        name: str,
        collections: Sequence[str],
        *,
        model: str = "logistic",
        test_size: float = 0.2,
        seed: int = 0,
    ) -> TrainReport:
        """Train a classifier on the clean members of `collections` (the labels), report on a held-out split and
        save it next to the index as `name`. model: logistic | linear-svm | svm-rbf."""
        with self._reading() as store:
            return ops.train(store, name, collections, model=model, test_size=test_size, seed=seed)

    def classify(
        self,
        name: str,
        photos: Sequence[PhotoInput] | None = None,
        *,
        ids: Sequence[int] | None = None,
        collection: str | None = None,
        apply: bool = False,
    ) -> list[Prediction]:
        """A saved classifier's label and probability for photos (files or bytes), indexed ids, or a collection.

        apply=True stores the predictions of indexed photos in the index's metadata."""
        if isinstance(photos, (str, bytes, os.PathLike)):
            photos = [photos]
        if sum(x is not None for x in (photos, ids, collection)) != 1:
            raise InvalidArgument("give exactly one of photos, ids= or collection=")
        if apply and photos is not None:
            raise InvalidArgument("apply stores predictions of indexed photos: give ids= or collection=")
        with self._writing() if apply else self._reading() as store:
            model = self._classifiers.get(name, store.stamp.as_dict() if store.stamp else None)
            if photos is not None:
                keys: list[dict[str, Any]] = [{"path": str(p) if not isinstance(p, bytes) else None} for p in photos]
                vectors = self._embed(store, photos) if photos else np.empty((0, model.dim), np.float32)
                predictions = ops.predict(model, vectors, keys)
            else:
                pids = member_ids(store, collection) if collection is not None else [_photo_id(i) for i in ids or []]
                predictions = ops.classify_stored(store, model, pids)
            if apply:
                store.save_predictions(name, [(p.id, p.label, p.probability) for p in predictions])
        return predictions

    # ---- maintenance --------------------------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check the index against its metadata and files; changes nothing. `report.ok` is False on a problem."""
        from imgidx.indexer import verify as checks
        from imgidx.indexer.compose import build_running

        with self._reading() as store:
            return checks.verify(store, build_running=build_running(self.home))

    def repair(self) -> VerifyReport:
        """Rebuild what can be rebuilt from the stored vectors and files; the report after it lists what was done."""
        from imgidx.indexer import verify as checks

        with self._writing(lock=True) as store:
            report = checks.verify(store)
            if any(f.error and f.repairable for f in report.findings):
                done = checks.repair(store, report)
                report = checks.verify(store)
                report = replace(report, repaired=tuple(done))
        return report

    def reindex(self, kind: str = "auto") -> ReindexReport:
        """Rebuild the FAISS index from the exact stored vectors as another kind: flat (exact) | ivf | ivfpq | hnsw |
        auto (flat up to 50k vectors, IVF beyond, IVF-PQ past 2 GB of float16 codes; later builds keep following
        it). Vectors are untouched."""
        if kind not in ann.CHOICES:
            raise InvalidArgument(f"the index kind must be one of {'|'.join(ann.CHOICES)}; received {kind!r}")
        with self._writing(lock=True) as store:
            if store.stamp is None:
                from imgidx.indexer.errors import EmptyIndex

                raise EmptyIndex(f"the index in {self.home} is empty; build it first")
            before = store.describe_index()  # a lost index is not trained here only to be replaced
            start = time.monotonic()
            store.rebuild_index(kind)
            seconds = time.monotonic() - start
            after = ann.describe(store.index)
            recall = ann.recall_at_k(store.index, store.vector_ids(), store.vectors) if after["kind"] != "flat" else 1.0
        return ReindexReport(before, {**after, "requested": kind}, recall, seconds)

    # ---- for the faces ------------------------------------------------------------------------------------------
    def describe(self, ids: Sequence[int]) -> list[Neighbour]:
        """Attribution records of indexed photos (score 0.0)."""
        with self._reading() as store:
            return describe(store, [(_photo_id(i), 0.0) for i in ids])


def _photo_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"a photo id is a whole number; received {value!r}")
    return int(value)


def _pixels(photo: PhotoInput) -> npt.NDArray[np.uint8]:
    from imgidx.indexer.errors import ImageError
    from imgidx.indexer.images import prepare
    from imgidx.search.inputs import read_photo

    if isinstance(photo, (bytes, bytearray, memoryview)):
        try:
            return prepare(bytes(photo))
        except ImageError as e:
            raise InvalidArgument(f"the photo cannot be used: {e.reason}") from None
    if isinstance(photo, (str, os.PathLike)):
        return read_photo(Path(photo))
    raise InvalidArgument(f"a photo is a file path or the file's bytes; received {type(photo).__name__}")


def _weights_for_workers(embedder) -> str:
    """The weights as another process resolves them to the same stamp: random:SEED, or the file's absolute path."""
    spec = embedder.weights
    return spec.fingerprint if spec.kind == "random" else str(Path(spec.path).resolve())


def _json_or_none(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
