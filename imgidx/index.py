"""`Index`: the public Python API of imgidx, a thin face over the operations (imgidx.ops). The CLI (imgidx.cli) calls
it; the HTTP service (imgidx.service) calls the operations on the store it keeps open.

Each public method checks what users pass, opens the store for its own duration (read-only unless it writes,
under the build lock when it changes the FAISS index), calls one operation and returns its record; its docstring is
the API's documentation. Opening an index reads nothing and imports no model framework. The embedding model is
built on first need, from the index's own stamp, and kept for later calls (the operations take it as `embed`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from imgidx import ops
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import InvalidArgument, NoIndexError
from imgidx.indexer.layout import db_file
from imgidx.indexer.store import Store
from imgidx.ops import PhotoInput, Source

from .results import (
    AuditReport,
    BuildReport,
    CleanReport,
    CollectionInfo,
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
        """The data home: the folder that holds the index, its photos and classifiers."""
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
        """Whether the home holds an index (a build made its catalogue); reads nothing else."""
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

    def _model(self, store: Store) -> Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]:
        """The index's model as the operations take it (pixels -> vectors), built on its first call."""
        # the model pads every call to its batch size: one photo, one row
        return lambda pixels: self._embedder(store, min(32, len(pixels))).embed(pixels)

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
        report = ops.build(
            self.settings,
            source,
            layer=layer,
            weights=weights,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            decode_workers=decode_workers,
            retry_failed=retry_failed,
            on_progress=on_progress,
            runtime=runtime,
            engine=engine,
            ray_address=ray_address,
        )
        self._embedders.clear()  # a new index may have a new stamp
        return report

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
            return ops.similar(
                store,
                k,
                photo=photo,
                id=None if id is None else ops.check_photo_id(id),
                vector=vector,
                embed=self._model(store),
                collection=collection,
                include_flagged=include_flagged,
            )

    def photo(self, id: int) -> PhotoInfo:  # noqa: A002
        """An indexed photo's record: its attribution, source, state, size, dates, tags and where it is flagged."""
        with self._reading() as store:
            return ops.photo_info(store, ops.check_photo_id(id))

    def vectors(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """The stored unit vectors of indexed photos, in the order of `ids`."""
        with self._reading() as store:
            return ops.stored_vectors(store, [ops.check_photo_id(i) for i in ids])

    def collections(self) -> list[CollectionInfo]:
        """Each collection's name, its photos and how many of them a stored clean or a review flagged."""
        with self._reading() as store:
            return ops.collections(store)

    def info(self) -> IndexInfo:
        """Collections and counts, the model stamp, the index kind and size, failures."""
        with self._reading() as store:
            return ops.info(store)

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
        with self._writing() if apply else self._reading() as store:
            return ops.clean(store, collection, apply=apply, **options)

    def undo_clean(self, collection: str) -> int:
        """Remove the stored clean flags (and ranks) of a collection; returns how many of its photos had them."""
        with self._writing() as store:
            return ops.undo_clean(store, collection)

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
            return ops.review(
                store, collection, ops.check_photo_id(photo_id), decision, reviewer=reviewer, source=source
            )

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
            ids = [ops.check_photo_id(p) for p in photo_ids]
            return ops.review_photos(store, collection, ids, decision, reviewer=reviewer, source=source)

    def undo_reviews(self, collection: str, photo_ids: Sequence[int]) -> list[Review | None]:
        """undo_review() on several photos at once; the decisions that count now."""
        with self._writing() as store:
            return ops.undo_reviews(store, collection, [ops.check_photo_id(p) for p in photo_ids])

    def review_next(
        self, collection: str, n: int = 10, *, method: str = "auto", classifier: str | None = "auto"
    ) -> ReviewQueue:
        """The n unreviewed photos of `collection` whose decisions would teach the clean cut most: the least
        certain ones, spread over the collection (search/reviewed.py)."""
        with self._reading() as store:
            return ops.review_next(store, collection, n, method=method, classifier=classifier)

    def undo_review(self, collection: str, photo_id: int) -> Review | None:
        """Withdraw the newest decision on a photo; returns the decision that counts now (None: the automatic one)."""
        with self._writing() as store:
            return ops.undo_review(store, collection, ops.check_photo_id(photo_id))

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
        with self._writing() if apply else self._reading() as store:
            return ops.duplicates(store, collections, threshold=threshold, pixel_check=pixel_check, apply=apply)

    def undo_duplicates(self, collections: Sequence[str] = ()) -> int:
        """Remove the flags duplicates(apply=True) stored (clean's stay); returns how many memberships had one."""
        with self._writing() as store:
            return ops.undo_duplicates(store, collections)

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
        with self._reading() as store:
            return ops.export_collections(
                store,
                Path(out),
                collections,
                format=format,
                split=split,
                seed=seed,
                licenses=licenses,
                include_flagged=include_flagged,
                threshold=threshold,
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
            return ops.classify(
                store,
                self._classifiers,
                name,
                photos=photos,
                ids=ids,
                collection=collection,
                embed=self._model(store),
                save=apply,
            )

    # ---- maintenance --------------------------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check the index against its metadata and files; changes nothing. `report.ok` is False on a problem."""
        with self._reading() as store:
            return ops.verify(store)

    def repair(self) -> VerifyReport:
        """Rebuild what can be rebuilt from the stored vectors and files; the report after it lists what was done."""
        with self._writing(lock=True) as store:
            return ops.repair(store)

    def reindex(self, kind: str = "auto") -> ReindexReport:
        """Rebuild the FAISS index from the exact stored vectors as another kind: flat (exact) | ivf | ivfpq | hnsw |
        auto (flat up to 50k vectors, IVF beyond, IVF-PQ past 2 GB of float16 codes; later builds keep following
        it). Vectors are untouched."""
        ops.check_kind(kind)  # before the store: a wrong kind is the caller's mistake, whatever the home holds
        with self._writing(lock=True) as store:
            return ops.reindex(store, kind)

    # ---- for the faces ------------------------------------------------------------------------------------------
    def describe(self, ids: Sequence[int]) -> list[Neighbour]:
        """Attribution records of indexed photos (score 0.0)."""
        with self._reading() as store:
            return ops.describe(store, [(ops.check_photo_id(i), 0.0) for i in ids])
