"""The answers of the HTTP API: the library's operations (imgidx.ops) on the service's read-only Store, turned into
JSON-ready dicts. Runs on the service's store thread only.

Local file paths never leave this module: photos point to their `/photos/{id}/image` URL instead.
The library's exceptions go through unchanged; api.py maps them to status codes.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imgidx import ops
from imgidx.indexer.errors import InvalidArgument
from imgidx.indexer.store import Store
from imgidx.ops import describe, nearest
from imgidx.results import CleanReport, Neighbour
from imgidx.search import classifier as classifiers
from imgidx.search.classifier import Classifiers, LinearClassifier
from imgidx.search.knn import check_collection, member_ids

from .service import BadRequest

MAX_CLASSIFY = 5000  # stored photos per classify request


def classifier_path(home: Path, name: str) -> Path:
    """$IMGIDX_HOME/classifiers/<name>.joblib, by the library's rule for names (never a path elsewhere)."""
    try:
        return classifiers.classifier_path(home, name)
    except InvalidArgument as e:
        raise BadRequest(str(e)) from None


EVIDENCE_CACHED = 4  # collections whose clean evidence (their vectors) stays in memory between decisions


def public(photo: Neighbour, *, scored: bool = True) -> dict[str, Any]:
    """A photo for the API: the --json form with the server's file path replaced by the image's URL."""
    out = {k: v for k, v in photo.as_dict().items() if k != "path" and (scored or k != "score")}
    out["image_url"] = f"/photos/{photo.id}/image"
    return out


class Queries:
    def __init__(self, max_k: int = 1000):
        self.max_k = max_k
        self._clean_cache: OrderedDict[tuple, dict] = OrderedDict()
        # a collection's vectors each: the few collections being reviewed now
        self._evidence: OrderedDict[tuple, ops.CleanEvidence] = OrderedDict()
        self._classifiers: Classifiers | None = None  # of the served home, kept while their files do not change

    # ---- similar ---------------------------------------------------------------------------------------------
    def similar_to_vector(
        self, store: Store, vec: npt.NDArray[np.float32], k: int, collection: str | None, include_flagged: bool
    ) -> list[dict]:
        self._check_k(k)
        return [public(h) for h in nearest(store, vec, k, collection=collection, include_flagged=include_flagged)]

    def similar_to_id(
        self, store: Store, photo_id: int, k: int, collection: str | None, include_flagged: bool
    ) -> list[dict]:
        self._check_k(k)
        return self.similar_to_vector(store, self.stored_vector(store, photo_id), k, collection, include_flagged)

    def stored_vector(self, store: Store, photo_id: int) -> npt.NDArray[np.float32]:
        return ops.stored_vectors(store, [photo_id])[0]

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.max_k:
            raise BadRequest(f"k must be between 1 and {self.max_k}; received {k}")

    # ---- photos and collections ------------------------------------------------------------------------------
    def photo(self, store: Store, photo_id: int) -> dict:
        info = ops.photo_info(store, photo_id)
        out = public(info.photo, scored=False)
        out.update(
            source=info.source,
            state=info.state,
            width=info.width,
            height=info.height,
            date_taken=info.date_taken,
            date_upload=info.date_upload,
            error=info.error,
            tags=list(info.tags),
            flagged_in=list(info.flagged_in),
        )
        return out

    def photo_file(self, store: Store, photo_id: int) -> Path:
        return ops.photo_file(store, photo_id)

    def collections(self, store: Store) -> list[dict]:
        return [{"name": c.name, "photos": c.photos, "flagged": c.flagged} for c in ops.collections(store)]

    # ---- clean -----------------------------------------------------------------------------------------------
    def clean(self, store: Store, generations: tuple[int, int], name: str, options: dict[str, Any]) -> dict:
        """The ranking with the collection's reviews, from cached evidence: a decision refits only the probe.
        generations: (the store's vectors, its metadata): the answer is kept while neither nor the reviews change."""
        evidence = self.evidence(store, generations[0], name, options)
        reviews = tuple((r["photo_id"], r["decision"], r["reviewer"]) for r in store.reviews(name))
        key = ("clean", generations, name, tuple(sorted(options.items())), id(evidence), reviews)
        return self._cached(key, lambda: _clean_answer(ops.judged_report(store, evidence)))

    def review_next(self, store: Store, generation: int, name: str, n: int) -> dict:
        return ops.review_queue(store, self.evidence(store, generation, name, {}), n).as_dict()

    def evidence(self, store: Store, generation: int, name: str, options: dict[str, Any]) -> ops.CleanEvidence:
        """A collection's clean evidence (the cut before reviews), cached while what it is made of is unchanged:
        the vectors (generation: the store opened anew), the memberships and the other collections' flags (a
        review elsewhere, `clean --apply`). A review of this collection leaves it as it is."""
        check_collection(store, name)
        key = (
            "evidence",
            generation,
            name,
            tuple(sorted(options.items())),
            tuple(sorted(store.counts_by_collection().items())),
            store.flagged_elsewhere(name),
        )
        if key in self._evidence:
            self._evidence.move_to_end(key)
            return self._evidence[key]
        self._evidence[key] = found = ops.clean_evidence(store, name, **options)
        while len(self._evidence) > EVIDENCE_CACHED:
            self._evidence.popitem(last=False)
        return found

    # ---- the review views: duplicates and audit (cached per index generation, like clean) -----------------
    def duplicates(self, store: Store, generation: int, name: str) -> dict:
        check_collection(store, name)
        return self._cached(
            ("duplicates", generation, name), lambda: _duplicates_answer(store, ops.duplicates(store, [name]))
        )

    def audit(self, store: Store, generation: int, name: str, k: int) -> dict:
        check_collection(store, name)
        names = [name, *(n for n in store.collection_names() if n != name)]
        if len(names) < 2:
            raise BadRequest(f"an audit compares {name!r} with other collections: the index has no other one")
        return self._cached(
            ("audit", generation, name, k), lambda: _audit_answer(store, name, ops.audit(store, names, k))
        )

    def _cached(self, key: tuple, make) -> dict:
        if key in self._clean_cache:
            self._clean_cache.move_to_end(key)
            return self._clean_cache[key]
        answer = make()
        self._clean_cache[key] = answer
        while len(self._clean_cache) > 32:
            self._clean_cache.popitem(last=False)
        return answer

    # ---- classify --------------------------------------------------------------------------------------------
    def classifier_names(self, store: Store) -> list[str]:
        return classifiers.classifier_names(store.home)

    def classifier(self, store: Store, name: str) -> LinearClassifier:
        classifier_path(store.home, name)  # a bad name is the request's fault (400)
        if self._classifiers is None or self._classifiers.home != store.home:
            self._classifiers = Classifiers(store.home)
        return self._classifiers.get(name, store.stamp.as_dict() if store.stamp else None)

    def classify_vector(self, store: Store, name: str, vec: npt.NDArray[np.float32]) -> dict:
        clf = self.classifier(store, name)
        [p] = ops.predict(clf, vec.reshape(1, -1), [{}])
        return self._answer(name, clf, [p.as_dict(digits=6)])

    def classify_stored(self, store: Store, name: str, ids: list[int] | None, collection: str | None) -> dict:
        clf = self.classifier(store, name)
        if collection is not None:
            ids = member_ids(store, collection)
        ids = list(dict.fromkeys(ids or []))
        if not ids:
            raise BadRequest(
                'send a photo (multipart field "file") or JSON {"id": N}, {"ids": [...]} or {"collection": NAME}'
            )
        if len(ids) > MAX_CLASSIFY:
            raise BadRequest(f"at most {MAX_CLASSIFY} photos per request; received {len(ids)}")
        predicted = ops.classify_stored(store, clf, ids)
        described = describe(store, [(p.id, 0.0) for p in predicted])
        preds = [
            {**public(photo, scored=False), "label": p.label, "probability": round(p.probability, 6)}
            for photo, p in zip(described, predicted, strict=True)
        ]
        return self._answer(name, clf, preds)

    @staticmethod
    def _answer(name: str, clf: LinearClassifier, predictions: list[dict]) -> dict:
        return {"model": name, "kind": clf.kind, "classes": list(clf.classes), "predictions": predictions}


def _duplicates_answer(store: Store, result) -> dict:
    ids = [pid for g in result.groups for pid in g.ids]
    photos = {p.id: public(p, scored=False) for p in describe(store, [(pid, 0.0) for pid in ids])}
    groups = [
        {
            "kind": g.kind,
            "keep": g.keep,
            "max_distance": round(float(g.max_distance), 6),
            "items": [
                {**photos[pid], "keep": pid == g.keep, "duplicate_of": None if pid == g.keep else g.keep}
                for pid in g.ids
            ],
        }
        for g in result.groups
    ]
    return {"threshold": round(float(result.threshold), 6), "groups": groups}


def _audit_answer(store: Store, name: str, report) -> dict:
    rows = [r for r in report.photos if r.label == name and r.flagged]
    photos = {p.id: public(p, scored=False) for p in describe(store, [(r.id, 0.0) for r in rows])}
    items = [
        {
            **photos[r.id],
            "suggested": r.suggested,
            "margin": r.margin,
            "agreement": r.agreement,
            "reasons": list(r.reasons),
        }
        for r in rows
    ]
    return {"collection": name, "against": [c for c in report.collections if c != name], "k": report.k, "items": items}


def _clean_answer(report: CleanReport) -> dict:
    items = [
        {
            **public(r.photo, scored=False),
            "rank": r.rank,
            "distance": r.distance,
            "z": r.z,
            "outlier": r.flagged,
            "reason": r.reason,  # why it is flagged (search/outliers.py)
            "score": r.score,
            "flagged_in_index": r.flagged_in_index,  # by an earlier `imgidx clean --apply`
            "reviewed": r.reviewed,  # a person's decision ("flag" | "keep"), which "outlier" follows
            "p_flag": r.p_flag,  # P(flag) re-judged with the reviews (None without any)
        }
        for r in report.rows
    ]
    return {
        "collection": report.collection,
        "photos": len(report.rows),
        "outliers": len(report.flagged),
        "cutoff": round(report.cutoff, 6),
        "iterations_run": report.iterations_run,
        "method": report.method,
        "reviews": report.reviews,
        "items": items,
    }
