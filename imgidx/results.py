"""What the library returns: frozen records (no I/O here). `as_dict()` gives each record's JSON form, the one the
CLI prints with --json; the HTTP service derives its answers from the same records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Neighbour:
    """One photo of the index with its attribution; `score` is the cosine similarity to the query (0.0 where a
    record describes a photo without a query). `license` is Flickr's licence id, `license_name` its name;
    `image_url` is where the photo was downloaded from ("" for folder photos), `path` its local file."""

    id: int
    source_id: str
    score: float
    collections: tuple[str, ...]
    title: str
    owner: str
    license: int | None
    license_name: str
    page_url: str
    image_url: str
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_id": self.source_id,
            "score": self.score,
            "collections": list(self.collections),
            "title": self.title,
            "owner": self.owner,
            "license": self.license_name,
            "page_url": self.page_url,
            "path": self.path,
        }


@dataclass(frozen=True)
class PhotoInfo:
    """Everything the index knows about one photo."""

    photo: Neighbour  # attribution (score 0.0)
    source: str  # "flickr" | "folder"
    state: str  # pending | downloaded | embedded | indexed | failed
    width: int | None
    height: int | None
    date_taken: str
    date_upload: str
    error: str | None
    tags: tuple[str, ...]
    flagged_in: tuple[str, ...]  # collections in which a stored clean flagged this photo

    @property
    def id(self) -> int:
        return self.photo.id


@dataclass(frozen=True)
class Review:
    """A person's decision on a photo's flag in one collection (provenance: who, when, from which view).
    `automatic` is the flag clean/duplicates stored on the membership; `decision` overrides it ("flag"|"keep")."""

    photo_id: int
    collection: str
    decision: str
    reviewer: str
    created_at: float
    source: str  # the view it was made in: "clean" | "duplicates" | "audit"
    automatic: bool

    @property
    def flagged(self) -> bool:
        return self.decision == "flag"

    def as_dict(self) -> dict[str, Any]:
        return {
            "photo_id": self.photo_id,
            "collection": self.collection,
            "decision": self.decision,
            "reviewer": self.reviewer,
            "created_at": self.created_at,
            "source": self.source,
            "automatic": self.automatic,
        }


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    photos: int  # with vectors
    flagged: int  # of those, flagged by a stored clean


@dataclass(frozen=True)
class CleanRow:
    rank: int  # 1 = most typical
    distance: float  # to the (robust) centroid
    z: float  # robust z-score of the distance
    flagged: bool  # an outlier by this ranking
    iteration: int | None  # pass that started its final run of being flagged
    flagged_in_index: bool  # flagged by an earlier stored clean (before this ranking)
    photo: Neighbour  # attribution (score 0.0)
    reason: str = ""  # why it is flagged ("" when it is not): search/outliers.py
    score: float = 0.0  # strongest evidence that it does not belong; > 1 where flagged by the default cut
    margin: float | None = None  # nearest other collection's centre − own side's; None without rivals
    neighbours_elsewhere: int = 0  # of its 10 nearest photos, those in rival collections
    reviewed: str | None = None  # a person's decision on it ("flag" | "keep"), which `flagged` follows
    p_flag: float | None = None  # P(flag) re-judged with the collection's reviews; None where none were used

    @property
    def id(self) -> int:
        return self.photo.id

    def as_dict(self) -> dict[str, Any]:
        p = self.photo
        return {
            "rank": self.rank,
            "id": p.id,
            "source_id": p.source_id,
            "distance": self.distance,
            "z": self.z,
            "flagged": self.flagged,
            "iteration": self.iteration,
            "reason": self.reason,
            "score": self.score,
            "margin": self.margin,
            "neighbours_elsewhere": self.neighbours_elsewhere,
            "reviewed": self.reviewed,
            "p_flag": self.p_flag,
            "title": p.title,
            "page_url": p.page_url,
            "path": p.path,
        }


@dataclass(frozen=True)
class CleanReport:
    collection: str
    against: str | None
    iterations_run: int
    cutoff: float
    applied: bool  # the flags were stored
    rows: tuple[CleanRow, ...]  # most typical first
    method: str = "centroid"  # "index": other collections and/or a classifier; "centroid"/"against": the seed's loop
    allies: tuple[str, ...] = ()  # other collections of the same kind of photo
    rivals: tuple[str, ...] = ()  # other collections its photos are compared against
    classifier_label: str | None = None  # the saved classifier's class taken as this collection's
    reviews: int = 0  # the collection's reviewed photos that taught this ranking (0: the cut alone)

    @property
    def flagged(self) -> tuple[CleanRow, ...]:
        return tuple(r for r in self.rows if r.flagged)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "against": self.against,
            "iterations_run": self.iterations_run,
            "cutoff": self.cutoff,
            "method": self.method,
            "allies": list(self.allies),
            "rivals": list(self.rivals),
            "classifier_label": self.classifier_label,
            "reviews": self.reviews,
            "applied": self.applied,
            "photos": [r.as_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class NextPhoto:
    """A photo to review next: its decision now is the least certain (imgidx.search.reviewed)."""

    photo: Neighbour  # attribution (score 0.0)
    flagged: bool  # the decision it has now
    p_flag: float  # P(flag) now (reviews included)
    reason: str  # why it is asked, and what the cut says of it

    @property
    def id(self) -> int:
        return self.photo.id

    def as_dict(self) -> dict[str, Any]:
        p = self.photo
        return {
            "id": p.id,
            "source_id": p.source_id,
            "title": p.title,
            "reason": self.reason,
            "flagged": self.flagged,
            "p_flag": self.p_flag,
            "page_url": p.page_url,
            "path": p.path,
        }


@dataclass(frozen=True)
class ReviewQueue:
    """`review COLLECTION --next N`: the photos whose decisions would teach the cut most, most useful first."""

    collection: str
    strategy: str  # how they were chosen, in words
    reviewed: int  # photos of the collection reviewed so far
    photos: tuple[NextPhoto, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "strategy": self.strategy,
            "reviewed": self.reviewed,
            "photos": [p.as_dict() for p in self.photos],
        }


@dataclass(frozen=True)
class AuditRow:
    id: int
    source_id: str
    label: str  # the collection it is filed under
    suggested: str  # the collection its vector points to
    flagged: bool
    margin: float
    agreement: float
    reasons: tuple[str, ...]
    title: str

    def as_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class AuditReport:
    collections: tuple[str, ...]
    k: int
    photos: tuple[AuditRow, ...]  # every labelled photo

    @property
    def suspects(self) -> tuple[AuditRow, ...]:
        return tuple(p for p in self.photos if p.flagged)

    def as_dict(self, *, all_photos: bool = False) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "k": self.k,
            "suspects": len(self.suspects),
            "photos": [p.as_dict() for p in (self.photos if all_photos else self.suspects)],
        }


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class Misclassification:
    id: int
    source_id: str
    true: str
    predicted: str
    probability: float
    title: str
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class TrainReport:
    name: str
    path: str  # the saved classifier file
    model: str  # logistic | linear-svm | svm-rbf
    classes: tuple[str, ...]
    accuracy: float  # on the held-out split
    n_train: int
    n_test: int
    per_class: dict[str, ClassScore]
    confusion: tuple[tuple[int, ...], ...]  # [true][predicted], in `classes` order
    misclassified: tuple[Misclassification, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "model": self.model,
            "classes": list(self.classes),
            "accuracy": self.accuracy,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "per_class": {
                c: {"precision": s.precision, "recall": s.recall, "support": s.support}
                for c, s in self.per_class.items()
            },
            "confusion": [list(row) for row in self.confusion],
            "misclassified": [m.id for m in self.misclassified],
            "misclassified_photos": [m.as_dict() for m in self.misclassified],
        }


@dataclass(frozen=True)
class Prediction:
    """A classifier's label for an indexed photo (`id`) or for a photo given to it (`path`, or neither for bytes)."""

    label: str
    probability: float
    id: int | None = None
    path: str | None = None

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        key = {"id": self.id} if self.id is not None else {"path": self.path} if self.path is not None else {}
        return {**key, "label": self.label, "probability": round(self.probability, digits)}


@dataclass(frozen=True)
class Failure:
    id: int
    source_id: str
    reason: str


@dataclass(frozen=True)
class BuildReport:
    requested: int
    already_indexed: int
    failed_before: int  # failed in an earlier build and not retried
    embedded: int
    reused: int  # identical bytes seen before: vector copied
    downloaded: int
    failures: tuple[Failure, ...]  # photos skipped in this build, with the reason
    seconds: float
    index: dict[str, Any] = field(default_factory=dict)  # the index's counts after the build (see IndexInfo)
    notes: tuple[str, ...] = ()  # said once per build: e.g. an int8 index extended on a CPU without VNNI

    @property
    def skipped(self) -> int:
        return len(self.failures)

    @property
    def photos_per_second(self) -> float | None:
        return round((self.embedded + self.reused) / self.seconds, 2) if self.seconds else None

    @property
    def all_failed(self) -> bool:
        """Photos were tried and every one failed: nothing was added (a run to look at, not a success)."""
        return bool(self.failures) and self.embedded + self.reused == 0

    @property
    def summary(self) -> str:
        """One line for a run in which every photo failed ("" otherwise): how many, and the commonest reasons."""
        if not self.all_failed:
            return ""
        reasons = Counter(_reason_kind(f.reason) for f in self.failures).most_common(3)
        shown = "; ".join(f"{n} x {why}" for why, n in reasons)
        n = len(self.failures)
        return f"nothing was indexed: all {n} photo{'s' if n != 1 else ''} tried failed ({shown})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "already_indexed": self.already_indexed,
            "failed_before": self.failed_before,
            "embedded": self.embedded,
            "reused": self.reused,
            "downloaded": self.downloaded,
            "skipped": self.skipped,
            "failures": [{"id": f.id, "source_id": f.source_id, "reason": f.reason} for f in self.failures],
            "seconds": round(self.seconds, 2),
            "photos_per_second": self.photos_per_second,
            "all_failed": self.all_failed,
            "index": self.index,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class IndexInfo:
    home: str
    photos: int  # with vectors
    collections: dict[str, int]
    clean: dict[str, int]  # per collection: photos not flagged by a stored clean
    stamp: dict[str, Any] | None  # the model that made the vectors (None: nothing embedded yet)
    stamp_text: str | None  # the stamp in one line
    index: dict[str, Any]  # FAISS kind, size, storage, ...; `requested` is the kind later builds keep
    states: dict[str, int]
    failures: int
    failed: tuple[dict[str, Any], ...]  # the failed photos (id, source, source_id, error, retryable, attempts)
    calibration: dict[str, Any] | None = None  # int8: photos, pixels_sha256, when, seconds of its calibration

    def as_dict(self, *, failures: bool = False) -> dict[str, Any]:
        d = {
            "home": self.home,
            "photos": self.photos,
            "collections": self.collections,
            "clean": self.clean,
            "stamp": self.stamp,
            "index": self.index,
            "states": self.states,
            "failures": self.failures,
            "int8_calibration": self.calibration,
        }
        if failures:
            d["failed"] = [dict(f) for f in self.failed]
        return d


@dataclass(frozen=True)
class ReindexReport:
    before: dict[str, Any]
    after: dict[str, Any]
    recall_at_10: float  # of the new index against exact search (1.0 for flat)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "recall_at_10": self.recall_at_10, "seconds": self.seconds}


def _reason_kind(reason: str) -> str:
    """A failure reason without its details in brackets, so that alike failures count together."""
    kind = reason.split(" (", 1)[0].strip()
    return kind if len(kind) <= 60 else kind[:57] + "..."
