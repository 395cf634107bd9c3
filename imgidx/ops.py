"""The operations of the index on an open Store, each written once: `Index` calls them on a store it opens per
call, the HTTP service on the one store its store thread keeps open. No model here (the embedder stays with the
caller: `Index` builds it on first need, the service keeps it behind its micro-batcher)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imgidx.indexer import layout
from imgidx.indexer.errors import InvalidArgument, NotFound, StoreError
from imgidx.indexer.licenses import license_name
from imgidx.indexer.store import Store
from imgidx.search.knn import member_ids

from .results import (
    AuditReport,
    AuditRow,
    ClassScore,
    CleanReport,
    CleanRow,
    CollectionInfo,
    Misclassification,
    Neighbour,
    NextPhoto,
    PhotoInfo,
    Prediction,
    Review,
    ReviewQueue,
    TrainReport,
)


# ---- vectors ----------------------------------------------------------------------------------------------------
def stored_vectors(store: Store, ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """The stored vectors of `ids`, in order; an id without a vector is NotFound."""
    try:
        return store.vectors(list(ids))
    except StoreError:
        missing = [i for i in ids if not store.has_vector(i)]
        if len(missing) == 1:
            raise NotFound(f"no indexed photo with id {missing[0]}") from None
        raise NotFound(f"no indexed photos with ids {missing[:20]}") from None


def predict(model, vectors: npt.NDArray[np.float32], keys: Sequence[dict[str, Any]]) -> list[Prediction]:
    """A classifier's label and probability per vector, each with its key (id=... or path=...)."""
    labels, probs = model.predict(vectors) if len(vectors) else ([], [])
    return [Prediction(str(lab), float(p), **key) for key, lab, p in zip(keys, labels, probs, strict=True)]


def classify_stored(store: Store, model, ids: Sequence[int]) -> list[Prediction]:
    """The predictions of indexed photos (their stored vectors), in the order of `ids`, each id once."""
    ids = list(dict.fromkeys(ids))
    return predict(model, stored_vectors(store, ids), [{"id": pid} for pid in ids])


def query_vector(store: Store, vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A caller's vector as a unit float32 vector of the index's dimension."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    dim = store.stamp.dim if store.stamp else None
    if dim is not None and v.shape[0] != dim:
        raise InvalidArgument(f"the vector has {v.shape[0]} dimensions; the index's vectors have {dim}")
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise InvalidArgument("the vector must be finite and not all zeros")
    return v / norm


# ---- photos and collections -------------------------------------------------------------------------------------
def photo_info(store: Store, photo_id: int) -> PhotoInfo:
    row = store.photo_rows([photo_id]).get(photo_id)
    if row is None:
        raise NotFound(f"no photo with id {photo_id}")
    [photo] = describe(store, [(photo_id, 0.0)])
    kept = {c for c in photo.collections if photo_id in store.vector_ids(c, include_flagged=False)}
    return PhotoInfo(
        photo=photo,
        source=row["source"],
        state=row["state"],
        width=row["width"],
        height=row["height"],
        date_taken=row["date_taken"],
        date_upload=row["date_upload"],
        error=row["error"],
        tags=tuple(row["tags"].split()) if row["tags"] else (),
        # a stored clean flags a photo in one collection (its membership), not everywhere
        flagged_in=tuple(c for c in photo.collections if c not in kept),
    )


def photo_file(store: Store, photo_id: int) -> Path:
    """The photo's local file, from the database only; it must lie inside the data home (downloads) or the
    folder the photo was indexed from (folder photos)."""
    row = store.photo_rows([photo_id]).get(photo_id)
    if row is None:
        raise NotFound(f"no photo with id {photo_id}")
    if not row["path"]:
        raise NotFound(f"photo {photo_id} has no local file (it was never downloaded)")
    # realpath, not abspath: a symlink inside the folder that points outside it must not be served
    base = Path(os.path.realpath(row["origin"] if row["source"] == "folder" else store.home))
    path = Path(os.path.realpath(layout.local_file(base, row["path"])))  # links resolved; an absolute path stays
    if base not in path.parents:
        raise NotFound(f"photo {photo_id}'s file is outside its folder; not served")
    if not path.is_file():
        raise NotFound(f"photo {photo_id}'s file is missing on disk")
    return path


def collections(store: Store) -> list[CollectionInfo]:
    counts = store.counts()
    return [CollectionInfo(name, n, n - counts["clean"][name]) for name, n in counts["collections"].items()]


# ---- clean and audit --------------------------------------------------------------------------------------------
def collection_vectors(store: Store, name: str, *, include_flagged: bool = True) -> tuple[list[int], np.ndarray]:
    ids = member_ids(store, name, include_flagged=include_flagged)
    if not ids:
        raise NotFound(f"collection {name!r} has no embedded photos yet")
    return ids, store.vectors(ids)


@dataclass(frozen=True)
class CleanEvidence:
    """What a collection's clean ranking is made of that no review changes: its photos, the cut's result and the
    Teacher (vectors + evidence) that re-judges them with the reviews. Kept between decisions (the service caches
    it per index generation), so that a decision refits only the probe."""

    collection: str
    against: str | None
    ids: tuple[int, ...]
    result: Any  # search.outliers.OutlierResult
    teacher: Any  # search.reviewed.Teacher, None where a fixed cut (drop, threshold, against) was asked for
    photos: dict[int, Any]  # id -> Neighbour
    rows: dict[int, int]  # id -> its row in ids


def clean_evidence(
    store: Store,
    collection: str,
    *,
    iterations: int = 5,
    drop: int | None = None,
    threshold: str | float = "auto",
    k_mad: float = 3.0,
    against: str | None = None,
    method: str = "auto",
    classifier: str | None = "auto",
) -> CleanEvidence:
    """The cut's ranking of a collection before any review (search/outliers.py), with what reviews need."""
    from imgidx.search.classifier import Classifiers
    from imgidx.search.outliers import index_inputs, rank_outliers
    from imgidx.search.reviewed import Teacher

    if drop is not None and threshold != "auto":
        raise InvalidArgument("drop and threshold exclude each other: give one of them")
    ids = member_ids(store, collection)
    if not ids:
        raise NotFound(f"collection {collection!r} has no embedded photos yet")
    reference = collection_vectors(store, against, include_flagged=False)[1] if against else None
    if method not in ("auto", "centroid"):
        raise InvalidArgument(f"method must be 'auto' or 'centroid'; received {method!r}")
    # The index's other collections and a classifier: one call's extra inputs (search/outliers.py), with this
    # collection's vectors read into the same array: nothing here uses them after rank_outliers, which may then
    # make its unit rows in that memory.
    extra = {}
    if method == "auto":
        model = classifier
        if classifier not in ("auto", None):
            model = Classifiers(store.home).get(classifier, store.stamp.as_dict() if store.stamp else None)
        extra = index_inputs(store, collection, classifier=model, ids=ids)
    vectors = extra.pop("vectors") if extra else store.vectors(ids)
    try:
        result = rank_outliers(
            vectors,
            iterations=iterations,
            drop=drop,
            threshold=threshold,
            k_mad=k_mad,
            reference=reference,
            overwrite=True,
            **extra,
        )
    except (ValueError, TypeError) as e:
        raise InvalidArgument(str(e)) from None
    # reviews teach the default cut (a fixed cut is what its caller asked for: reviewed photos only keep theirs);
    # the vectors are read again: rank_outliers made its unit rows in the ones it had
    fixed = drop is not None or threshold != "auto" or against is not None
    teacher = None if fixed else Teacher(store.vectors(ids), result.score)
    photos = {p.id: p for p in describe(store, [(pid, 0.0) for pid in ids])}
    return CleanEvidence(collection, against, tuple(ids), result, teacher, photos, {p: i for i, p in enumerate(ids)})


def review_decisions(store: Store, evidence: CleanEvidence) -> dict[int, tuple[bool, str]]:
    """Row -> (flagged, reviewer) of the collection's reviewed photos (the newest decision on each)."""
    rows = {}
    for r in store.reviews(evidence.collection):
        row = evidence.rows.get(r["photo_id"])
        if row is not None:  # a photo reviewed before its vector was lost is not ranked at all
            rows[row] = (r["decision"] == "flag", r["reviewer"])
    return rows


def judged_report(store: Store, evidence: CleanEvidence, *, use_reviews: bool = True) -> CleanReport:
    """The ranking with the collection's reviews: reviewed photos keep their decision, the others are re-judged
    with what the decisions teach (search/reviewed.py). use_reviews=False: the cut alone, as if none existed."""
    result, ids = evidence.result, evidence.ids
    decisions = review_decisions(store, evidence) if use_reviews else {}
    flagged, reasons = result.flagged, list(result.reasons)
    order = result.order
    p_flag = None
    if decisions:
        labels = {row: flag for row, (flag, _) in decisions.items()}
        if evidence.teacher is not None:
            judged = evidence.teacher.judge(labels)
            flagged, p_flag = judged.flagged, judged.probability
            for i in np.flatnonzero(judged.by_reviews):  # decided by the reviews, against the cut
                reasons[i] = judged.reason(int(i)) + (f"; the cut: {reasons[i]}" if reasons[i] else "")
            for i in np.flatnonzero(judged.flagged & ~judged.by_reviews & ~judged.reviewed):  # the reviews agree
                reasons[i] = f"{reasons[i]}; {judged.reason(int(i))}"
        else:
            flagged = flagged.copy()
            for row, flag in labels.items():
                flagged[row] = flag
        for row, (flag, reviewer) in decisions.items():
            reasons[row] = f"{'flagged' if flag else 'kept'} by {reviewer}"
        # kept photos first, then flagged ones; each from the least to the most likely to be flagged
        p_order = p_flag if p_flag is not None else flagged.astype(float)
        order = np.lexsort((result.score, p_order, flagged))
    kept = set(store.vector_ids(evidence.collection, include_flagged=False))
    # the per-photo fields no review changes, rounded once per call in numpy (4,000 rows at a decision's pace)
    distance, z = np.round(result.distances, 6).tolist(), np.round(result.z, 3).tolist()
    score, votes = np.round(result.score, 4).tolist(), result.votes.tolist()
    margin = [None if np.isnan(m) else m for m in np.round(result.margin, 6).tolist()]
    first, cut = result.first_flagged.tolist(), result.flagged.tolist()
    flags = flagged.tolist()
    p_list = None if p_flag is None else np.round(p_flag, 4).tolist()
    decided = {row: ("flag" if flag else "keep") for row, (flag, _) in decisions.items()}
    rows = tuple(
        CleanRow(
            rank=rank,
            distance=distance[i],
            z=z[i],
            flagged=flags[i],
            iteration=(first[i] or None) if flags[i] == cut[i] else None,
            flagged_in_index=ids[i] not in kept,
            photo=evidence.photos[ids[i]],
            reason=reasons[i],
            score=score[i],
            margin=margin[i],
            neighbours_elsewhere=votes[i],
            reviewed=decided.get(i),
            p_flag=None if p_list is None else p_list[i],
        )
        for rank, i in enumerate(order.tolist(), start=1)
    )
    return CleanReport(
        evidence.collection,
        evidence.against,
        result.iterations_run,
        float(result.cutoff),
        False,
        rows,
        method=result.method,
        allies=result.allies,
        rivals=result.rivals,
        classifier_label=result.label,
        reviews=len(decisions),
    )


def clean_report(store: Store, collection: str, *, use_reviews: bool = True, **options: Any) -> CleanReport:
    """Rank a collection from typical to outlier (nothing stored; see apply_clean), re-judged with its reviews.

    method "auto" also uses the index's other collections and a saved classifier (search/outliers.py);
    "centroid" is the seed's loop alone. classifier: "auto", a saved classifier's name, or None. Options: those
    of clean_evidence."""
    return judged_report(store, clean_evidence(store, collection, **options), use_reviews=use_reviews)


def review_queue(store: Store, evidence: CleanEvidence, n: int) -> ReviewQueue:
    """The n unreviewed photos whose decisions would teach the cut most (search/reviewed.py: Teacher.next)."""
    from imgidx.search.reviewed import STRATEGY

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgument(f"the number of photos to review next is a whole number >= 1; received {n!r}")
    if evidence.teacher is None:
        raise InvalidArgument("what to review next is chosen against the default cut, not a fixed drop or threshold")
    decisions = review_decisions(store, evidence)
    judged = evidence.teacher.judge({row: flag for row, (flag, _) in decisions.items()})
    photos = []
    for row in evidence.teacher.next(judged, n):
        p = float(judged.probability[row])
        why = "; ".join(w for w in (evidence.result.reasons[row], judged.reason(row) if decisions else "") if w)
        photos.append(
            NextPhoto(
                photo=evidence.photos[evidence.ids[row]],
                flagged=bool(judged.flagged[row]),
                p_flag=round(p, 4),
                reason=f"near the cut: {'flagged' if judged.flagged[row] else 'kept'} with p(flag) {p:.2f}"
                + (f"; {why}" if why else ""),
            )
        )
    return ReviewQueue(evidence.collection, STRATEGY, len(decisions), tuple(photos))


def apply_clean(store: Store, report: CleanReport) -> None:
    """Store a ranking's flags: flagged photos leave similar-within-collection, training and clean counts."""
    info = {r.id: {"distance": r.distance, "z": r.z, "iteration": r.iteration} for r in report.rows}
    store.set_flags(report.collection, info, {r.id for r in report.rows if r.flagged})


def labelled_ids(store: Store, collections: Sequence[str]) -> tuple[list[int], list[str]]:
    """(ids, labels) of the clean members of `collections`; a photo in two of them is ambiguous and left out."""
    members = {name: member_ids(store, name, include_flagged=False) for name in dict.fromkeys(collections)}
    seen: dict[int, int] = {}
    for ids in members.values():
        for pid in ids:
            seen[pid] = seen.get(pid, 0) + 1
    pairs = [(pid, name) for name, ids in members.items() for pid in ids if seen[pid] == 1]
    return [p for p, _ in pairs], [n for _, n in pairs]


def two_or_more(collections: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(collections, str) or len(set(collections)) < 2:
        raise InvalidArgument(f"{what} needs at least two different collections; received {list(collections)!r}")
    return tuple(collections)


def audit(store: Store, collections: Sequence[str], k: int = 10) -> AuditReport:
    """Model-free label-noise check: photos closer to another collection, or whose neighbours are another's."""
    from imgidx.search.audit import audit_labels

    names = two_or_more(collections, "an audit")
    ids, labels = labelled_ids(store, names)
    try:
        result = audit_labels(store.vectors(ids), labels, k=k)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(str(e)) from None
    meta = {h.id: h for h in describe(store, [(pid, 0.0) for pid in set(ids)])}
    rows = tuple(
        AuditRow(
            id=ids[p.index],
            source_id=meta[ids[p.index]].source_id,
            label=p.label,
            suggested=p.suggested,
            flagged=p.flagged,
            margin=round(float(p.margin), 6),
            agreement=round(float(p.agreement), 3),
            reasons=tuple(p.reasons),
            title=meta[ids[p.index]].title,
        )
        for p in result.photos
    )
    return AuditReport(names, result.k, rows)


# ---- reviews ----------------------------------------------------------------------------------------------------
MAX_REVIEWER = 100  # characters of a reviewer's name


def _review(row) -> Review:
    return Review(
        photo_id=row["photo_id"],
        collection=row["collection"],
        decision=row["decision"],
        reviewer=row["reviewer"],
        created_at=row["created_at"],
        source=row["source"],
        automatic=bool(row["automatic"]),
    )


def check_review(store: Store, collection: str, photo_id: int, decision: str, reviewer: str, source: str) -> str:
    """Refuse what is not a decision on a membership; returns the reviewer's name, tidied."""
    from imgidx.indexer.store.catalog import DECISIONS, REVIEW_SOURCES

    if decision not in DECISIONS:
        raise InvalidArgument(f"a decision is one of {', '.join(DECISIONS)}; received {decision!r}")
    if source not in REVIEW_SOURCES:
        raise InvalidArgument(f"a review's source is one of {', '.join(REVIEW_SOURCES)}; received {source!r}")
    if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > MAX_REVIEWER:
        raise InvalidArgument(f"a reviewer is a name of 1 to {MAX_REVIEWER} characters; received {reviewer!r}")
    check_membership(store, collection, photo_id)
    return " ".join(reviewer.split())


def check_membership(store: Store, collection: str, photo_id: int) -> None:
    from imgidx.search.knn import check_collection

    check_collection(store, collection)
    if not store.is_member(collection, photo_id):
        raise NotFound(f"photo {photo_id} is not in collection {collection!r}")


def review(
    store: Store, collection: str, photo_id: int, decision: str, *, reviewer: str = "anonymous", source: str = "clean"
) -> Review:
    """Store a person's decision: "flag" (the photo leaves the collection's clean set) or "keep" (it stays, whatever
    clean or duplicates flag later). The newest decision counts; undo_review withdraws it."""
    reviewer = check_review(store, collection, photo_id, decision, reviewer, source)
    store.add_review(collection, photo_id, decision, reviewer=reviewer, source=source)
    return current_review(store, collection, photo_id)  # type: ignore[return-value]


def review_photos(
    store: Store,
    collection: str,
    photo_ids: Sequence[int],
    decision: str,
    *,
    reviewer: str = "anonymous",
    source: str = "clean",
) -> list[Review]:
    """The same decision on several photos: every one is checked before any is stored (one bad id stores none)."""
    if not photo_ids:
        raise InvalidArgument("no photo ids to review")
    for pid in photo_ids:
        reviewer = check_review(store, collection, pid, decision, reviewer, source)
    store.add_reviews(collection, list(dict.fromkeys(photo_ids)), decision, reviewer=reviewer, source=source)
    return [current_review(store, collection, pid) for pid in dict.fromkeys(photo_ids)]  # type: ignore[misc]


def undo_reviews(store: Store, collection: str, photo_ids: Sequence[int]) -> list[Review | None]:
    """Withdraw the newest decision on each photo (all checked first); the decisions that count now."""
    if not photo_ids:
        raise InvalidArgument("no photo ids to undo")
    for pid in photo_ids:
        check_membership(store, collection, pid)
    store.remove_last_reviews(collection, list(dict.fromkeys(photo_ids)))
    return [current_review(store, collection, pid) for pid in dict.fromkeys(photo_ids)]


def undo_review(store: Store, collection: str, photo_id: int) -> Review | None:
    """Withdraw the newest decision on a photo; returns the one that counts now (None: the automatic flag)."""
    check_membership(store, collection, photo_id)
    store.remove_last_review(collection, photo_id)
    return current_review(store, collection, photo_id)


def current_review(store: Store, collection: str, photo_id: int) -> Review | None:
    rows = [r for r in store.reviews(collection) if r["photo_id"] == photo_id]
    return _review(rows[-1]) if rows else None


def reviews(store: Store, collection: str, *, history: bool = False) -> list[Review]:
    from imgidx.search.knn import check_collection

    check_collection(store, collection)
    return [_review(r) for r in store.reviews(collection, history=history)]


# ---- classifiers ------------------------------------------------------------------------------------------------
def train(
    store: Store,
    name: str,
    collections: Sequence[str],
    *,
    model: str = "logistic",
    test_size: float = 0.2,
    seed: int = 0,
) -> TrainReport:
    """Train on the clean members of `collections` (their names are the labels), evaluate on a held-out split,
    save to <home>/classifiers/<name>.joblib stamped with the index's model."""
    from imgidx.search.classifier import classifier_path, train_classifier

    names = two_or_more(collections, "a classifier")
    path = classifier_path(store.home, name)
    ids, labels = labelled_ids(store, names)
    try:
        report = train_classifier(store.vectors(ids), labels, model=model, test_size=test_size, seed=seed)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(str(e)) from None
    report.classifier.save(path, store.stamp.as_dict() if store.stamp else {})
    wrong = describe(store, [(ids[m.index], m.probability) for m in report.misclassified])
    return TrainReport(
        name=name,
        path=str(path),
        model=model,
        classes=tuple(report.classes),
        accuracy=round(float(report.accuracy), 4),
        n_train=report.n_train,
        n_test=report.n_test,
        per_class={
            c: ClassScore(round(s.precision, 4), round(s.recall, 4), s.support) for c, s in report.per_class.items()
        },
        confusion=tuple(tuple(row) for row in report.confusion),
        misclassified=tuple(
            Misclassification(w.id, w.source_id, m.true, m.predicted, round(float(m.probability), 4), w.title, w.path)
            for w, m in zip(wrong, report.misclassified, strict=True)
        ),
    )


# ---- search results with their attribution ------------------------------------------------------------------


def nearest(
    store: Store,
    query: npt.NDArray[np.float32],
    k: int,
    *,
    collection: str | None = None,
    include_flagged: bool = False,
) -> list[Neighbour]:
    """The k best hits for one query vector, best first, each with score and metadata.

    Photos that a stored clean flagged in `collection` are left out unless include_flagged."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InvalidArgument(f"k must be a whole number > 0; received {k!r}")
    allowed = None
    if collection is not None:
        allowed = member_ids(store, collection, include_flagged=include_flagged)
    hits = store.search(query.reshape(1, -1), int(k), allowed=allowed)[0]
    return describe(store, [(h.photo_id, h.score) for h in hits])


def describe(store: Store, scored: list[tuple[int, float]]) -> list[Neighbour]:
    ids = [pid for pid, _ in scored]
    rows = store.photo_rows(ids)
    colls = store.collections_of(ids)
    out = []
    for pid, score in scored:
        r = rows[pid]
        path = str(layout.local_file(store.home, r["path"])) if r["path"] else ""
        out.append(
            Neighbour(
                id=pid,
                source_id=r["source_id"],
                score=round(float(score), 6),
                collections=tuple(colls[pid]),
                title=r["title"],
                owner=r["owner_name"] or r["owner"],
                license=r["license"],
                license_name=license_name(r["license"]),
                page_url=r["page_url"],
                image_url=r["url"] or "",
                path=path,
            )
        )
    return out
