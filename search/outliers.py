"""Flag the photos that do not belong in a collection, using what the index knows, and say why.

The seed's loop (003 §9.6, :func:`imgidx.search.cleanup.clean_ranking`) only sees the collection itself: it
ranks by distance to an iteratively re-estimated centroid and cuts at median + 3·MAD. That misses a dog among
cats whenever the dog is no farther from the cat centroid than an unusual cat (precision 0.69 / recall 0.60
on the real photos). An index usually holds more than one collection, and a dog is much easier to recognise
next to a ``dog`` collection than alone. So, for every photo of the collection being cleaned:

* **centre** (always): robust z of its distance to the collection's own robust centre — the seed's loop.
* **margin** (other collections): distance to the nearest *rival* collection's robust centre minus the distance
  to its own side's centre; negative = nearer the rival ("nearer to dog (margin -0.12)").
* **vote** (other collections): of its k nearest photos (cosine) among this collection and the others, how many
  belong to rivals ("8 of 10 neighbours in dog").
* **classifier** (a trained one whose classes include the collection's label): the probability of another class
  ("classifier says dog (p 0.97)").

Other collections are sorted into *allies* — the same kind of photo, e.g. a curated ``cat`` next to a noisy
``maybe_cat`` — and *rivals*. A collection is an ally when at least ``ALLY_SHARE`` of this collection's
inliers are nearer its centre than their own (an independent sample of the same thing takes about half; a
different thing takes only the strays). Allies' photos vote with the collection and their centres count as
its own side's.

A photo is flagged as belonging elsewhere when most of its k nearest photos are rivals' *and* it is nearer a
rival's centre or the classifier gives it another class (the vote is the precise signal; the margin and the
classifier each also fall for some unusual genuine photos, which their neighbours contradict); with a
classifier and no rivals, when the classifier says so. It is flagged as far from everything when it is beyond
the seed's cut (z > ``k_mad``) and, where other collections exist, farther from its k nearest photos in them
than any of their photos is from its own k nearest (an unusual but genuine photo with look-alikes in an ally is
kept). With no other collection and no classifier this is exactly the seed's loop and its 3-MAD cut.

Pure numpy: arrays in, a :class:`OutlierResult` out; the caller loads vectors and the classifier.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .cleanup import CleanResult, Threshold, _median_scale, as_exact64, check_vectors, clean_ranking, row_distances

# Share of a collection's inliers that must be nearer another collection's centre for that collection to count
# as the same kind of photo. Measured on the real photos (maybe_cat = 500 cats + 25 dogs, 5 draws): a held-out
# `cat` collection 0.41-0.45, `dog` 0.04-0.07; `cat` seen from `dog` 0.004.
ALLY_SHARE = 0.2
# Photos of the other collections whose own k-NN distance sets the "far from everything" bar (bounded cost).
NULL_SAMPLE = 2000
# Rows of the similarity matrix computed at once (1024 × 10k float32 is 40 MB whatever the index size).
_BLOCK_ROWS = 1024


class Classifier(Protocol):
    """What :func:`rank_outliers` needs of a trained classifier (search.classifier.LinearClassifier fits)."""

    classes: tuple[str, ...]
    estimator: Any  # has predict_proba(vectors) -> (n, len(classes))


@dataclass(frozen=True)
class OutlierResult:
    """Everything :class:`CleanResult` has (same meaning, aligned with the input rows), plus the evidence."""

    order: npt.NDArray[np.intp]  # kept (by score), then flagged as elsewhere, then far from everything
    score: npt.NDArray[np.float64]  # > 1 exactly for the flagged photos (unless a drop/threshold cut is used)
    flagged: npt.NDArray[np.bool_]
    reasons: tuple[str, ...]  # why each photo is flagged; "" when it is not
    distances: npt.NDArray[np.float64]  # to the collection's own robust centre (the seed's loop)
    z: npt.NDArray[np.float64]  # robust z of ``distances``
    margin: npt.NDArray[np.float64]  # nearest rival centre − own side's centre; NaN without rivals
    votes: npt.NDArray[np.int64]  # rival photos among the k nearest; 0 without rivals
    probability: npt.NDArray[np.float64]  # classifier's probability of another class; NaN without one
    first_flagged: npt.NDArray[np.int64]  # from the seed's loop for centre flags; 1 for the others; 0 = kept
    iterations_run: int
    centroid: npt.NDArray[np.float64]
    cutoff: float  # the seed's distance cut (median + k_mad·scale)
    method: str  # "centroid" (the seed's loop alone) or "index" (other collections and/or a classifier)
    allies: tuple[str, ...]
    rivals: tuple[str, ...]
    label: str | None  # the class of ``classifier`` taken as this collection's; None when no classifier is used
    k: int  # neighbours used for the vote (0 without rivals)

    @property
    def outliers(self) -> npt.NDArray[np.intp]:
        """Flagged row indices, most outlying first."""
        return self.order[self.flagged[self.order]][::-1]


def rank_outliers(
    vectors: npt.NDArray[np.floating],
    *,
    others: Mapping[str, npt.NDArray[np.floating]] | None = None,
    classifier: Classifier | None = None,
    label: str | None = None,
    k: int = 10,
    k_mad: float = 3.0,
    iterations: int = 5,
    drop: int | None = None,
    threshold: Threshold = "auto",
    reference: npt.NDArray[np.floating] | None = None,
    overwrite: bool = False,
) -> OutlierResult:
    """Score and flag the photos (rows of ``vectors``) of one collection; see the module docstring.

    ``others``: the index's other collections, name → vectors (the caller leaves their flagged photos out).
    ``classifier``: used with ``label`` when that is one of its classes; without ``label``, with the name of
    this collection's ally among its classes (a ``cat``/``dog`` classifier cleans ``maybe_cat`` next to ``cat``).
    ``k``: neighbours for the vote. ``k_mad``, ``iterations``: the seed loop's cut and passes.
    ``drop``, a float ``threshold`` or ``reference`` ask for the seed's own cuts (see ``clean_ranking``): the
    other collections and the classifier are then not used.
    ``overwrite``: the caller no longer needs ``vectors`` and ``others``; when they are consecutive rows of one
    float32 array (``index_inputs(..., ids=...)`` reads them so), the unit rows are made there, not in a copy.
    """
    check_vectors(vectors, "vectors")
    # float32 rows stay float32: every float64 result computed from them equals that of their float64 copy
    x = as_exact64(vectors)
    if drop is not None or threshold != "auto" or reference is not None:
        base = clean_ranking(x, iterations=iterations, drop=drop, threshold=threshold, k_mad=k_mad, reference=reference)
        return _seed_only(base, "against" if reference is not None else "centroid", k_mad)
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1; received {k!r}")
    given = [vectors, *(others or {}).values()]  # as given: float32 from a store needs no float64 round trip
    others = {str(name): as_exact64(np.asarray(v)) for name, v in (others or {}).items()}
    for name, v in others.items():
        check_vectors(v, f"collection {name!r}")
        if v.shape[1] != x.shape[1]:
            raise TypeError(f"collection {name!r} has {v.shape[1]} dimensions; this one has {x.shape[1]}")
    n = len(x)
    n_pool = sum(len(v) for v in others.values())
    # the products' buffer (1,024 x 16,000: 65 MB), faulted in by a thread during the seed loops below
    early = _faulted_in((min(_BLOCK_ROWS, n), n + n_pool)) if n_pool >= 2 else None
    base = clean_ranking(x, iterations=iterations, k_mad=k_mad)

    centres = {name: clean_ranking(v, iterations=iterations).centroid for name, v in others.items()}
    to_centre = {name: row_distances(x, c) for name, c in centres.items()}
    inliers = ~base.flagged
    allies = tuple(
        sorted(name for name, d in to_centre.items() if (d[inliers] < base.distances[inliers]).mean() >= ALLY_SHARE)
    )
    rivals = tuple(sorted(name for name in others if name not in allies))
    own_side = np.min([base.distances, *(to_centre[a] for a in allies)], axis=0)
    used_label, probability, predicted = _classifier_evidence(x, classifier, label, allies)
    if not others and used_label is None:
        return _seed_only(base, "centroid", k_mad)

    # Far from everything: beyond k_mad robust scales from the own centre and, where other collections exist,
    # from the k nearest photos outside this collection too (an unusual photo with look-alikes is not "far").
    # "Farther than any photo of the other collections is from its own k nearest" is the second test: the
    # index's own photos show how far a genuine photo's neighbours can be.
    e_far = base.z / k_mad
    # One pass of cosine similarities of this collection against itself and the others (float32, row blocks)
    # gives both the k-NN distances and the votes: the product is the whole cost (4,000 x 16,000 x 4,096).
    kn = min(int(k), n_pool - 1) if others else 0
    kk = min(int(k), n - 1 + n_pool) if rivals else 0
    pool, norms = _unit_rows(given, in_place=overwrite) if kn >= 1 or kk else (None, None)
    buffer = None
    if early is not None and pool is not None:
        early[1].join()
        buffer = early[0]
    votes, top, knn = _neighbours(pool, norms, n, _codes(n, others, rivals), len(rivals), kk, kn, buffer)
    vote_rival = [rivals[j] for j in top] if kk else [""] * n
    if kn >= 1:
        sample = n + np.random.default_rng(0).permutation(n_pool)[:NULL_SAMPLE]
        # pool is this function's own (a copy, or inputs it may overwrite): the sample rows go where this
        # collection's rows were, and the products into the same buffer, not into memory faulted in anew
        rows = _take_rows(pool, sample, pool[: len(sample)] if len(sample) <= n else None)
        null = _knn_distance(rows, norms[sample], pool[n:], norms[n:], kn + 1, skip_self=True, buffer=buffer).max()
        e_far = np.minimum(e_far, knn / null)
    far = e_far > 1

    # Does it belong to another collection? Each signal's evidence is > 1 exactly where it says so. The vote is
    # the most precise; the centre margin and the classifier each flag some unusual genuine photos (those sit
    # nearer a rival's centre or across the classifier's line) that their own neighbours contradict. So: most
    # neighbours in rivals, and nearer a rival's centre or another class by the classifier (the classifier alone
    # where there is no other collection).
    margin = np.full(n, np.nan)
    nearest_rival = [""] * n
    e_clf = probability / 0.5 if used_label is not None else np.zeros(n)
    e_rival = e_clf
    if rivals:
        rival_d = np.stack([to_centre[r] for r in rivals])
        margin = rival_d.min(axis=0) - own_side
        nearest_rival = [rivals[i] for i in rival_d.argmin(axis=0)]
        e_margin = 1.0 - margin / (_median_scale(margin)[1] or 1.0)
        e_rival = np.minimum(votes / (kk / 2), np.maximum(e_margin, e_clf))
    elsewhere = e_rival > 1
    score = np.maximum(e_far, e_rival)
    flagged = far | elsewhere

    reasons = []
    for i in range(n):
        why = []
        if elsewhere[i]:
            if e_clf[i] > 1:
                why.append(f"classifier says {predicted[i]} (p {probability[i]:.2f})")
            if rivals and margin[i] < 0:
                why.append(f"nearer to {nearest_rival[i]} (margin {margin[i]:+.3f})")
            if rivals:
                why.append(f"{votes[i]} of {kk} neighbours in {vote_rival[i]}")
        if far[i]:
            why.append(f"z {base.z[i]:.1f} from the centre" + (", far from every other collection" if others else ""))
        reasons.append("; ".join(why))
    return OutlierResult(
        # kept photos first, then those that belong elsewhere, then those far from everything; each by score
        order=np.lexsort((score, far, flagged)),
        score=score,
        flagged=flagged,
        reasons=tuple(reasons),
        distances=base.distances,
        z=base.z,
        margin=margin,
        votes=votes,
        probability=probability,
        first_flagged=np.where(flagged, np.maximum(base.first_flagged, 1), 0),
        iterations_run=base.iterations_run,
        centroid=base.centroid,
        cutoff=base.cutoff,
        method="index",
        allies=allies,
        rivals=rivals,
        label=used_label,
        k=kk,
    )


def _seed_only(base: CleanResult, method: str, k_mad: float) -> OutlierResult:
    """The seed loop's result with reasons (its distances, z, cut and order unchanged)."""
    n = len(base.distances)
    where = "from the centre" if method == "centroid" else "from the reference's centre"
    reasons = tuple(f"z {base.z[i]:.1f} {where}" if base.flagged[i] else "" for i in range(n))
    # Ranked by distance, as the seed does; the score is the z in units of the cut.
    return OutlierResult(
        order=base.order,
        score=base.z / k_mad,
        flagged=base.flagged,
        reasons=reasons,
        distances=base.distances,
        z=base.z,
        margin=np.full(n, np.nan),
        votes=np.zeros(n, dtype=np.int64),
        probability=np.full(n, np.nan),
        first_flagged=base.first_flagged,
        iterations_run=base.iterations_run,
        centroid=base.centroid,
        cutoff=base.cutoff,
        method=method,
        allies=(),
        rivals=(),
        label=None,
        k=0,
    )


def _classifier_evidence(
    x: npt.NDArray[np.float64], classifier: Classifier | None, label: str | None, allies: tuple[str, ...]
) -> tuple[str | None, npt.NDArray[np.float64], list[str]]:
    """(label used, probability of the most likely other class, that class) — (None, NaN, "") when unused."""
    n = len(x)
    unused = None, np.full(n, np.nan), [""] * n
    if classifier is None:
        return unused
    classes = [str(c) for c in classifier.classes]
    if label is None:
        label = next((a for a in allies if a in classes), None)
        if label is None:
            return unused  # nothing says which of its classes this collection is
    elif label not in classes:
        raise ValueError(f"label {label!r} is not one of the classifier's classes {classes}")
    if len(classes) < 2:
        return unused
    proba = np.asarray(classifier.estimator.predict_proba(x.astype(np.float32)), dtype=np.float64)
    own = classes.index(label)
    rest = proba.copy()
    rest[:, own] = -1.0
    best = rest.argmax(axis=1)
    return label, rest[np.arange(n), best], [classes[j] for j in best]


def _unit_rows(
    parts: list[npt.NDArray[np.floating]], *, in_place: bool = False
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The rows as unit float32 rows, and their norms (the k-NN distances are between the rows as given).

    _UNIT_ROWS rows at a time, copied, measured and divided while they are in the CPU's cache (one pass over the
    260 MB pool, not three); the norm is np.linalg.norm's own formula for float32 rows, sqrt(add.reduce(x * x)),
    so each row's norm and unit row are the same bits whatever the blocks. in_place: when the parts are
    consecutive rows of one float32 array, that array becomes the pool (the parts are overwritten): a fresh
    pool's first touch is most of the cost (page faults, and on a virtual machine the host's too)."""
    parts = [np.asarray(p) for p in parts]
    total = sum(len(p) for p in parts)
    dim = parts[0].shape[1]
    pool = _consecutive(parts) if in_place else None
    copy = pool is None
    if copy:
        pool = np.empty((total, dim), dtype=np.float32)
    norms = np.empty(total, dtype=np.float32)
    squares = np.empty((min(_UNIT_ROWS, total), dim), dtype=np.float32)
    at = 0
    for part in parts:
        for start in range(0, len(part), _UNIT_ROWS):
            block = pool[at : at + len(part[start : start + _UNIT_ROWS])]
            if copy:
                block[...] = part[start : start + _UNIT_ROWS]  # as np.asarray(part, dtype=np.float32) would
            sq = np.multiply(block, block, out=squares[: len(block)])
            norm = np.sqrt(np.add.reduce(sq, axis=1), out=norms[at : at + len(block)])
            block /= np.maximum(norm, 1e-12)[:, None]
            at += len(block)
    return pool, norms


_UNIT_ROWS = 256


def _consecutive(parts: list[npt.NDArray[np.floating]]) -> npt.NDArray[np.float32] | None:
    """The rows of ``parts`` as one array when they are consecutive C-contiguous float32 rows of one, else None."""
    base = parts[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 2 or base.dtype != np.float32 or not base.flags.c_contiguous:
        return None
    first = at = parts[0].__array_interface__["data"][0]
    for part in parts:
        if part.base is not base or part.dtype != np.float32 or not part.flags.c_contiguous or part.ndim != 2:
            return None
        if part.shape[1] != base.shape[1] or part.__array_interface__["data"][0] != at:
            return None
        at += part.nbytes
    start = (first - base.__array_interface__["data"][0]) // base.strides[0]
    return base[start : start + sum(len(p) for p in parts)]


def _take_rows(
    pool: npt.NDArray[np.float32], rows: npt.NDArray[np.intp], into: npt.NDArray[np.float32] | None
) -> npt.NDArray[np.float32]:
    """``pool[rows]``, written into ``into`` (rows of pool that none of ``rows`` is in) when it is given."""
    if into is None:
        return pool[rows]
    for start in range(0, len(rows), _UNIT_ROWS):  # small copies: numpy would copy all of pool for an overlap
        into[start : start + _UNIT_ROWS] = pool[rows[start : start + _UNIT_ROWS]]
    return into


def _codes(n: int, others: dict[str, npt.NDArray[np.floating]], rivals: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Per row of [this collection, *others]: -1 for this collection and its allies, else the rival's index."""
    return np.concatenate(
        [np.full(n, -1)] + [np.full(len(v), rivals.index(nm) if nm in rivals else -1) for nm, v in others.items()]
    )


def _neighbours(
    pool: npt.NDArray[np.float32] | None,
    norms: npt.NDArray[np.float32] | None,
    n: int,
    codes: npt.NDArray[np.int64],
    n_rivals: int,
    k: int,
    kn: int,
    buffer: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.int64], list[int], npt.NDArray[np.float64]]:
    """For each of the first n rows of ``pool`` (this collection; unit rows, the other collections after them):
    how many of its k cosine-nearest rows (itself left out) are rivals' (codes >= 0), the rival (index) most of
    those are in, and the mean Euclidean distance to its kn nearest rows after the first n (0 when k or kn is 0).
    buffer: (min(_BLOCK_ROWS, n), len(pool)) float32 for the products, or None for a new one."""
    votes, top_rival, knn = np.zeros(n, dtype=np.int64), [0] * n, np.zeros(n)
    if pool is None or norms is None:
        return votes, top_rival, knn
    if buffer is None:
        buffer = np.empty((min(_BLOCK_ROWS, n), len(pool)), dtype=np.float32)  # one block's, reused
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        sims = np.matmul(pool[start:stop], pool.T, out=buffer[: stop - start])
        if kn >= 1:
            knn[start:stop] = _mean_distance(sims[:, n:], norms[start:stop], norms[n:], kn)
        if k:
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # a photo is not its own neighbour
            nn = _largest(sims, k)
            c = codes[nn]
            votes[start:stop] = (c >= 0).sum(axis=1)
            counts = np.stack([(c == r).sum(axis=1) for r in range(n_rivals)], axis=1)
            top_rival[start:stop] = counts.argmax(axis=1).tolist()
    return votes, top_rival, knn


# Candidates per row and neighbour beyond which _largest and _smallest hand a block to numpy's partition (~8
# expected; far more only when many values equal the bar, which sorting them all would make slower).
_CANDIDATES = 64


def _candidates(values: npt.NDArray[np.float32], k: int, *, largest: bool) -> npt.NDArray[np.bool_] | None:
    """Where each row's k largest (or smallest) values can be: the k largest of every 8th column are k values of
    the row, so its k-th largest is at least their smallest (~8k candidates of the row's columns). None where the
    full partition is the better way: rows shorter than 16k, or many values tying the bar (copies of one photo)."""
    rows, cols = values.shape
    if cols < 16 * k:
        return None
    sample = values[:, ::8]  # >= 2k columns
    if largest:
        mask = values >= np.partition(sample, sample.shape[1] - k, axis=1)[:, sample.shape[1] - k, None]
    else:
        mask = values <= np.partition(sample, k - 1, axis=1)[:, k - 1, None]
    return None if np.count_nonzero(mask) > _CANDIDATES * k * rows else mask


def _largest(sims: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Per row, the columns of its k largest values: as a set, what ``np.argpartition(-sims, k - 1, axis=1)[:, :k]``
    gives (ties at the k-th value included: those rows are handed to argpartition itself), at a fraction of its
    cost: only the _candidates are sorted, and the first k of them are the answer
    unless the k+1-th ties the k-th."""
    rows, cols = sims.shape
    above = _candidates(sims, k, largest=True)
    if above is None:
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]
    r, c = np.divmod(np.flatnonzero(above), cols)
    v = sims[r, c]
    order = np.lexsort((-v, r))  # by row, then largest first (r is ascending already: nonzero's row order)
    r, c, v = r[order], c[order], v[order]
    start = np.searchsorted(r, np.arange(rows))
    count = np.diff(np.append(start, len(r)))  # >= k in every row: the sample's k largest are there
    take = start[:, None] + np.arange(k)
    out = c[take]
    # the k-th value tied by the next one: which of the tied columns argpartition keeps is its own affair
    tied = np.flatnonzero((count > k) & (v[np.minimum(start + k, len(v) - 1)] == v[start + k - 1]))
    for i in tied.tolist():
        out[i] = np.argpartition(-sims[i], k - 1)[:k]
    return out


def _mean_distance(
    sims: npt.NDArray[np.float32],
    row_norms: npt.NDArray[np.float32],
    col_norms: npt.NDArray[np.float32],
    k: int,
    skip_self: bool = False,
) -> npt.NDArray[np.float64]:
    """Mean Euclidean distance from each row to its k nearest columns, from their cosines and norms:
    |a - b|^2 = |a|^2 + |b|^2 - 2|a||b|cos (skip_self: the nearest, the row itself, is left out of the mean).

    _SQ_ROWS rows at a time: the same float32 operations per element as on the whole block at once, on
    temporaries that stay in the CPU's cache (1,024 x 12,000 ones are 49 MB each, written and faulted in anew)."""
    out = np.empty(len(sims))
    col_sq = col_norms[None, :] ** 2
    for start in range(0, len(sims), _SQ_ROWS):
        stop = min(start + _SQ_ROWS, len(sims))
        rn = row_norms[start:stop, None]
        sq = (rn * col_norms[None, :]) * sims[start:stop]
        sq *= -2.0
        sq += rn**2
        sq += col_sq
        nearest = _smallest(sq, k)[:, 1 if skip_self else 0 :]
        out[start:stop] = np.sqrt(np.maximum(nearest.astype(np.float64), 0.0)).mean(axis=1)
    return out


_SQ_ROWS = 64


def _smallest(values: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """Each row's k smallest values, ascending: ``np.sort(np.partition(values, k - 1, axis=1)[:, :k], axis=1)``
    (values, not positions: ties cannot make a difference); only the _candidates (~8k of 12,000) are sorted."""
    rows = len(values)
    low = _candidates(values, k, largest=False)
    if low is None:
        return np.sort(np.partition(values, k - 1, axis=1)[:, :k], axis=1)
    counts = low.sum(axis=1)
    v = values[low]  # row by row
    v = v[np.lexsort((v, np.repeat(np.arange(rows), counts)))]
    return v[(np.cumsum(counts) - counts)[:, None] + np.arange(k)]


def _knn_distance(
    x: npt.NDArray[np.float32],
    x_norms: npt.NDArray[np.float32],
    pool: npt.NDArray[np.float32],
    pool_norms: npt.NDArray[np.float32],
    k: int,
    *,
    skip_self: bool = False,
    buffer: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float64]:
    """Mean Euclidean distance from each row of x to its k nearest rows of pool (unit rows and their norms), in
    row blocks (skip_self: x's rows are in pool, and the nearest, itself, is left out of the mean). buffer: any
    C-contiguous float32 array to hold the products in when it is large enough (its values are overwritten)."""
    out = np.empty(len(x))
    shape = (min(_BLOCK_ROWS, len(x)), len(pool))
    if (
        buffer is not None
        and buffer.flags.c_contiguous
        and buffer.dtype == np.float32
        and buffer.size >= shape[0] * shape[1]
    ):
        buffer = buffer.reshape(-1)[: shape[0] * shape[1]].reshape(shape)
    else:
        buffer = np.empty(shape, dtype=np.float32)
    for start in range(0, len(x), _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, len(x))
        sims = np.matmul(x[start:stop], pool.T, out=buffer[: stop - start])
        out[start:stop] = _mean_distance(sims, x_norms[start:stop], pool_norms, k, skip_self)
    return out


# ---- the inputs, read from an index (the only part of this module that touches a Store) ----------------------


def index_inputs(
    store: Any, collection: str, *, classifier: Any = "auto", ids: list[int] | None = None
) -> dict[str, Any]:
    """``others``, ``classifier`` and ``label`` for :func:`rank_outliers`, read from an open Store.

    others: every other collection's embedded photos, less those an earlier ``clean --apply`` flagged there and
    less the photos this collection shares with it. classifier: "auto" takes a saved classifier
    ($IMGIDX_HOME/classifiers/*.joblib) made on this index's vectors whose classes include this collection's
    name, else one whose classes include another collection's name (rank_outliers then uses it only when that
    collection is an ally); a loaded classifier is used as given; None uses none. label: this collection's
    name when it is one of the classes.

    ids: this collection's photos (store.vector_ids(collection), as rank_outliers is to rank them); with them,
    ``vectors`` is theirs too, read with the others' into one array (rank_outliers(..., overwrite=True) then makes
    its unit rows there instead of in a copy)."""
    own_ids = store.vector_ids(collection) if ids is None else ids
    own = set(own_ids)
    sizes = {name: n for name, n in store.counts_by_collection().items() if name != collection}
    early = None
    if ids is not None and own_ids and store.stamp is not None:
        # at most this many rows are read (see _other_collections): a thread faults the array in meanwhile
        early = _faulted_in((len(own_ids) + min(OTHERS_BUDGET, sum(sizes.values())), store.stamp.dim))
    wanted = {}
    for name in _other_collections(store, collection, own_ids, sizes):
        members = [i for i in store.vector_ids(name, include_flagged=False) if i not in own]
        if members:
            wanted[name] = members
    parts: dict[str | None, list[int]] = ({None: own_ids} if ids is not None else {}) | wanted
    total = sum(len(m) for m in parts.values())
    if early is not None:
        early[1].join()
    if early is not None and len(early[0]) >= total:
        rows = early[0][:total]
    else:
        rows = np.empty((total, store.stamp.dim), dtype=np.float32) if parts else None
    read: dict[str | None, npt.NDArray[np.float32]] = {}
    at = 0
    for name, members in parts.items():
        read[name] = store.vectors(members, out=rows[at : at + len(members)])
        at += len(members)
    others = {name: read[name] for name in wanted}
    model = _saved_classifier(store, collection, set(others)) if classifier == "auto" else classifier
    label = collection if model is not None and collection in model.classes else None
    out = {"others": others, "classifier": model, "label": label}
    return out | ({"vectors": read[None]} if ids is not None else {})


OTHERS_BUDGET = 12_000  # other collections' photos scored against (float64 at 4096-d: 0.4 GB; k-NN cost grows with it)
PROBES = 64  # this collection's photos whose nearest neighbours pick the other collections beyond the budget


def _faulted_in(shape: tuple[int, int]) -> tuple[npt.NDArray[np.float32], threading.Thread]:
    """A new float32 array and the thread that writes it once (zeros), so that its pages are in memory when the
    caller, busy meanwhile in one thread, writes it: a first touch costs page faults (on a virtual machine, the
    host's too), and numpy releases the GIL while it fills."""
    rows = np.empty(shape, dtype=np.float32)
    thread = threading.Thread(target=np.copyto, args=(rows, np.float32(0)), daemon=True)
    thread.start()
    return rows, thread


def _other_collections(
    store: Any, collection: str, own_ids: list[int], sizes: dict[str, int] | None = None
) -> list[str]:
    """Every other collection while they fit OTHERS_BUDGET photos together; beyond (an index of 250 collections
    of 4,000), those where the index finds this collection's neighbours, most neighbours first, up to the budget:
    a collection none of its photos' neighbours are in can neither vote nor be an ally. sizes: the other
    collections' counts_by_collection(), when the caller has them."""
    if sizes is None:
        sizes = {name: n for name, n in store.counts_by_collection().items() if name != collection}
    if sum(sizes.values()) <= OTHERS_BUDGET or not own_ids:
        return sorted(n for n, size in sizes.items() if size)
    probe = np.random.default_rng(0).choice(own_ids, size=min(PROBES, len(own_ids)), replace=False)
    own = set(own_ids)
    hits = [h.photo_id for row in store.search(store.vectors(probe.tolist()), 20) for h in row]
    found: dict[str, int] = {}
    for names in store.collections_of([i for i in hits if i not in own]).values():
        for name in names:
            if name != collection:
                found[name] = found.get(name, 0) + 1
    chosen, total = [], 0
    for name in sorted(found, key=lambda n: (-found[n], n)):
        if total + sizes.get(name, 0) > OTHERS_BUDGET:
            break
        chosen.append(name)
        total += sizes.get(name, 0)
    return sorted(chosen)


def _saved_classifier(store: Any, collection: str, names: set[str]) -> Any:
    """The index's saved classifier that knows `collection` (else one that knows another of `names`), loaded by
    classifier.Classifiers, the one loader; None when there is none."""
    from imgidx.indexer.errors import ClassifierError, NotFound, StampMismatch

    from .classifier import Classifiers, classifier_names

    stamp = store.stamp.as_dict() if store.stamp else {}
    loader, fallback = Classifiers(store.home), None
    for name in classifier_names(store.home):
        try:
            model = loader.get(name, stamp)
        except (StampMismatch, ClassifierError, NotFound):
            continue  # made on other vectors, or unreadable: not used (`imgidx classify` reports why)
        if collection in model.classes:
            return model
        if fallback is None and names & set(model.classes):
            fallback = model
    return fallback
