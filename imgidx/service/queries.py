"""The answers of the HTTP API, computed from a read-only Store. Runs on the service's store thread only.

Plain dicts out (they become JSON); service errors (NotFound, BadRequest, Conflict) for the API to map.
Local file paths never leave this module: photos point to their `/photos/{id}/image` URL instead.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imgidx.cli import train as cli_train
from imgidx.indexer.errors import ConfigError, StoreError
from imgidx.indexer.store import Store
from imgidx.search.classifier import LinearClassifier
from imgidx.search.classifier import StampMismatch as ClassifierStampMismatch
from imgidx.search.knn import describe, nearest
from imgidx.search.outliers import index_inputs, rank_outliers

from .service import BadRequest, Conflict, NotFound

MAX_CLASSIFY = 5000  # stored photos per classify request


def classifier_path(home: Path, name: str) -> Path:
    """$IMGIDX_HOME/classifiers/<name>.joblib, by `imgidx train`'s own rule for names (never a path elsewhere)."""
    try:
        return cli_train.classifier_path(home, name)
    except ConfigError as e:
        raise BadRequest(str(e)) from None


def public(hit: dict[str, Any]) -> dict[str, Any]:
    """A --json hit for the API: the server's file path is replaced by the image's URL."""
    out = {k: v for k, v in hit.items() if k != "path"}
    out["image_url"] = f"/photos/{hit['id']}/image"
    return out


def _kept(store: Store, collection: str, photo_id: int) -> bool:
    return photo_id in store.vector_ids(collection, include_flagged=False)


def _unscored(hit: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in public(hit).items() if k != "score"}


class Queries:
    def __init__(self, max_k: int = 1000):
        self.max_k = max_k
        self._clean_cache: OrderedDict[tuple, dict] = OrderedDict()
        self._classifiers: dict[str, tuple[int, LinearClassifier]] = {}

    # ---- similar ---------------------------------------------------------------------------------------------
    def similar_to_vector(
        self, store: Store, vec: npt.NDArray[np.float32], k: int, collection: str | None, include_flagged: bool
    ) -> list[dict]:
        self._check_k(k)
        if collection is not None:
            self._check_collection(store, collection)
        return [public(h) for h in nearest(store, vec, k, collection=collection, include_flagged=include_flagged)]

    def similar_to_id(
        self, store: Store, photo_id: int, k: int, collection: str | None, include_flagged: bool
    ) -> list[dict]:
        return self.similar_to_vector(store, self.stored_vector(store, photo_id), k, collection, include_flagged)

    def stored_vector(self, store: Store, photo_id: int) -> npt.NDArray[np.float32]:
        try:
            return store.vectors([photo_id])[0]
        except StoreError:
            raise NotFound(f"no indexed photo with id {photo_id}") from None

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.max_k:
            raise BadRequest(f"k must be between 1 and {self.max_k}; received {k}")

    @staticmethod
    def _check_collection(store: Store, name: str) -> None:
        names = store.collection_names()
        if name not in names:
            raise NotFound(f"no collection {name!r} in the index (collections: {', '.join(names) or 'none yet'})")

    # ---- photos and collections ------------------------------------------------------------------------------
    def photo(self, store: Store, photo_id: int) -> dict:
        row = store.photo_rows([photo_id]).get(photo_id)
        if row is None:
            raise NotFound(f"no photo with id {photo_id}")
        out = public(describe(store, [(photo_id, 0.0)])[0])
        del out["score"]
        extra = ("source", "state", "width", "height", "date_taken", "date_upload", "error")
        out.update({k: row[k] for k in extra})
        out["tags"] = row["tags"].split() if row["tags"] else []
        # `clean --apply` flags a photo in one collection (its membership), not everywhere
        out["flagged_in"] = [
            c for c in out["collections"] if photo_id not in store.vector_ids(c, include_flagged=False)
        ]
        return out

    def photo_file(self, store: Store, photo_id: int) -> Path:
        """The photo's local file, from the database only; it must lie inside the data home (downloads) or the
        folder the photo was indexed from (folder photos)."""
        row = store.photo_rows([photo_id]).get(photo_id)
        if row is None:
            raise NotFound(f"no photo with id {photo_id}")
        if not row["path"]:
            raise NotFound(f"photo {photo_id} has no local file (it was never downloaded)")
        base = Path(os.path.abspath(row["origin"] if row["source"] == "folder" else store.home))
        path = Path(os.path.abspath(base / row["path"]))  # normalised; an absolute row path replaces base
        if base not in path.parents:
            raise NotFound(f"photo {photo_id}'s file is outside its folder; not served")
        if not path.is_file():
            raise NotFound(f"photo {photo_id}'s file is missing on disk")
        return path

    def collections(self, store: Store) -> list[dict]:
        counts = store.counts()
        return [
            {"name": name, "photos": n, "flagged": n - counts["clean"][name]}
            for name, n in counts["collections"].items()
        ]

    # ---- clean -----------------------------------------------------------------------------------------------
    def clean(self, store: Store, generation: int, name: str, options: dict[str, Any]) -> dict:
        self._check_collection(store, name)
        key = (generation, name, tuple(sorted(options.items())))
        if key in self._clean_cache:
            self._clean_cache.move_to_end(key)
            return self._clean_cache[key]
        ids = store.vector_ids(name)
        if not ids:
            raise NotFound(f"collection {name!r} has no embedded photos yet")
        try:
            # with the index's other collections and a saved classifier, as `imgidx clean` (search/outliers.py)
            result = rank_outliers(store.vectors(ids), **options, **index_inputs(store, name))
        except (ValueError, TypeError) as e:
            raise BadRequest(str(e)) from None
        ordered = [int(i) for i in result.order]
        described = describe(store, [(ids[i], 0.0) for i in ordered])
        unflagged = set(store.vector_ids(name, include_flagged=False))
        items = []
        for rank, (i, hit) in enumerate(zip(ordered, described, strict=True), start=1):
            item = _unscored(hit)
            item.update(
                rank=rank,
                distance=round(float(result.distances[i]), 6),
                z=round(float(result.z[i]), 3),
                outlier=bool(result.flagged[i]),
                reason=result.reasons[i],
                score=round(float(result.score[i]), 4),
                flagged_in_index=ids[i] not in unflagged,  # by an earlier `imgidx clean --apply`
            )
            items.append(item)
        answer = {
            "collection": name,
            "photos": len(ids),
            "outliers": int(result.flagged.sum()),
            "cutoff": round(float(result.cutoff), 6),
            "iterations_run": result.iterations_run,
            "method": result.method,
            "items": items,
        }
        self._clean_cache[key] = answer
        while len(self._clean_cache) > 32:
            self._clean_cache.popitem(last=False)
        return answer

    # ---- classify --------------------------------------------------------------------------------------------
    def classifier_names(self, store: Store) -> list[str]:
        folder = store.home / "classifiers"
        names = sorted(p.stem for p in folder.glob("*.joblib")) if folder.is_dir() else []
        return [n for n in names if cli_train.NAME_RE.match(n) and not n.startswith(".")]

    def classifier(self, store: Store, name: str) -> LinearClassifier:
        path = classifier_path(store.home, name)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            known = ", ".join(self.classifier_names(store)) or "none yet; train one with `imgidx train`"
            raise NotFound(f"no classifier {name!r} (classifiers: {known})") from None
        cached = self._classifiers.get(name)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, LinearClassifier.load(path))
            except (ValueError, OSError, KeyError, EOFError) as e:
                raise Conflict(f"classifier {name!r} cannot be loaded: {e}") from None
            self._classifiers[name] = cached
        clf = cached[1]
        try:
            clf.check_stamp(store.stamp.as_dict() if store.stamp else {})
        except ClassifierStampMismatch as e:
            raise Conflict(str(e)) from None
        return clf

    def classify_vector(self, store: Store, name: str, vec: npt.NDArray[np.float32]) -> dict:
        clf = self.classifier(store, name)
        labels, probs = clf.predict(vec.reshape(1, -1))
        return self._answer(name, clf, [{"label": str(labels[0]), "probability": round(float(probs[0]), 6)}])

    def classify_stored(self, store: Store, name: str, ids: list[int] | None, collection: str | None) -> dict:
        clf = self.classifier(store, name)
        if collection is not None:
            self._check_collection(store, collection)
            ids = store.vector_ids(collection)
        ids = list(dict.fromkeys(ids or []))
        if not ids:
            raise BadRequest(
                'send a photo (multipart field "file") or JSON {"id": N}, {"ids": [...]} or {"collection": NAME}'
            )
        if len(ids) > MAX_CLASSIFY:
            raise BadRequest(f"at most {MAX_CLASSIFY} photos per request; received {len(ids)}")
        try:
            vectors = store.vectors(ids)
        except StoreError as e:
            raise NotFound(str(e)) from None
        labels, probs = clf.predict(vectors)
        described = describe(store, [(pid, 0.0) for pid in ids])
        preds = [
            {**_unscored(hit), "label": str(lab), "probability": round(float(p), 6)}
            for hit, lab, p in zip(described, labels, probs, strict=True)
        ]
        return self._answer(name, clf, preds)

    @staticmethod
    def _answer(name: str, clf: LinearClassifier, predictions: list[dict]) -> dict:
        return {"model": name, "kind": clf.kind, "classes": list(clf.classes), "predictions": predictions}
