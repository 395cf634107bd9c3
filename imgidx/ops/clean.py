"""clean on an open Store, in two steps: `clean_evidence` (the cut's ranking before any review: the service caches
it per collection) and `judged_report` (re-judged with the collection's reviews); storing and removing its flags;
what to review next (`review_queue`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from imgidx.indexer.errors import InvalidArgument, NotFound
from imgidx.indexer.store import Store
from imgidx.search.knn import member_ids

from ..results import CleanReport, CleanRow, NextPhoto, ReviewQueue
from .queries import collection_vectors, describe


def clean(store: Store, collection: str, *, apply: bool = False, **options: Any) -> CleanReport:
    """clean_report, and with apply=True its flags stored (the store must be writable)."""
    report = clean_report(store, collection, **options)
    if not apply:
        return report
    apply_clean(store, report)
    return replace(report, applied=True)


def undo_clean(store: Store, collection: str) -> int:
    """Remove a collection's stored clean flags (and ranks); how many of its photos had them."""
    return store.clear_flags(collection)


def review_next(
    store: Store, collection: str, n: int = 10, *, method: str = "auto", classifier: str | None = "auto"
) -> ReviewQueue:
    """The n unreviewed photos whose decisions would teach the default cut most (a fresh evidence: the service
    keeps its own per collection and calls review_queue)."""
    return review_queue(store, clean_evidence(store, collection, method=method, classifier=classifier), n)


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
