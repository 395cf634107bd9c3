"""Rank photos by how typical they are of their collection and flag the outliers.

The idea is the seed's §9.6 "poor man's outlier filter": average the fc2 vectors, measure the Euclidean
distance of every photo to that centroid, re-estimate the centroid from the closest photos only, repeat.
The seed drops a fixed number of photos each round (``drop=N``). By default we cut instead at
median + k·MAD of the distances, because a fixed N has to be guessed per collection and a robust cut
adapts to how noisy the search results actually are.

Pure numpy: takes arrays, returns a ``CleanResult``; no store, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal

import numpy as np
import numpy.typing as npt

# 1.4826·MAD estimates the standard deviation of normally distributed data; when MAD is 0 (more than
# half the distances tie) we fall back to 1.2533·mean absolute deviation, the same normal-consistent
# scaling used by the usual "modified z-score" (Iglewicz & Hoaglin).
MAD_SCALE = 1.4826
MEAN_AD_SCALE = 1.2533
# Inputs are float32 (about 1e-7 relative precision): spreads below this are rounding noise, not outliers.
_SCALE_FLOOR = 1e-6

Threshold = Literal["auto"] | float


@dataclass(frozen=True)
class CleanResult:
    """Outcome of :func:`clean_ranking`; every array is aligned with the input rows."""

    order: npt.NDArray[np.intp]  # row indices, most central first, most outlying last
    distances: npt.NDArray[np.float64]  # Euclidean distance to ``centroid``
    z: npt.NDArray[np.float64]  # robust z-score of each distance
    flagged: npt.NDArray[np.bool_]  # outliers after the final pass
    first_flagged: npt.NDArray[np.int64]  # pass (1-based) that started the final run of being flagged; 0 = not flagged
    iterations_run: int  # centroid passes actually computed (early stop when the flags stop changing)
    centroid: npt.NDArray[np.float64]  # the centroid ``distances`` are measured to
    cutoff: float  # distance above which a photo is flagged (drop mode: largest distance kept)

    @property
    def outliers(self) -> npt.NDArray[np.intp]:
        """Flagged row indices, most outlying first."""
        return self.order[self.flagged[self.order]][::-1]


def clean_ranking(
    vectors: npt.NDArray[np.floating],
    *,
    iterations: int = 5,
    drop: int | None = None,
    threshold: Threshold = "auto",
    k_mad: float = 3.0,
    reference: npt.NDArray[np.floating] | None = None,
) -> CleanResult:
    """Rank ``vectors`` (n, d) from most central to most outlying and flag outliers.

    ``iterations`` is the maximum number of centroid passes: pass 1 averages every photo (the seed's first
    ranking), each later pass averages only the photos the previous pass did not flag. The loop stops early
    once a pass flags exactly the photos its centroid already excluded (a fixed point).

    The cut is ``drop=N`` (the N farthest, as in the seed), a float ``threshold`` on the distance, or by
    default distance > median + ``k_mad``·scale, with scale = 1.4826·MAD.

    With ``reference`` (another collection's vectors), the centroid is that collection's robust centroid
    (this same loop run on it) and the automatic cut and z-scores use the reference's own spread, so the
    result says how far each photo sits from a typical reference photo.
    """
    check_vectors(vectors, "vectors")
    # float64 arithmetic so that centroids of thousands of 4096-d rows do not accumulate float32 rounding; float32
    # (and float16) rows stay as they are, since every operation on them casts them to float64 exactly.
    x = as_exact64(vectors)
    _check_options(len(x), iterations, drop, threshold, k_mad)
    if reference is not None:
        return _against_reference(x, reference, iterations=iterations, drop=drop, threshold=threshold, k_mad=k_mad)
    return _iterate(x, iterations, drop, threshold, k_mad)


def as_exact64(vectors: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """``vectors`` as they are when every value converts to float64 exactly (float16, float32), else as float64.

    What the loop computes from them (mean_rows, row_distances) is then equal bit for bit to the same on
    ``vectors.astype(np.float64)``, without that copy (12,000 x 4,096 float64 is 0.4 GB, and ~1.5 s to write)."""
    if vectors.dtype in (np.float16, np.float32):
        return vectors
    return vectors.astype(np.float64, copy=False)


def mean_rows(x: npt.NDArray[np.floating], keep: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """``x.astype(np.float64)[keep].mean(axis=0)``, equal bit for bit, without the float64 copy: numpy sums the
    rows one after another into a float64 accumulator either way (pairwise summation is only ever along the
    contiguous axis, here the 4,096 columns); the cast of each float32 row to float64 is exact. Every row kept
    (a first pass): no copy at all when the rows are C-contiguous, as the copy would be. Some rows left out:
    the kept rows are summed where they lie (``where=``), from add's identity +0.0 as the copy's sum starts
    (a column of -0.0 sums to +0.0 both ways), and divided by their count as numpy's mean divides: no 65 MB copy
    faulted in on every pass."""
    if x.flags.c_contiguous and keep.all():
        return x.mean(axis=0, dtype=np.float64)
    if x.flags.c_contiguous and x.ndim == 2 and x.shape[1] >= _WHERE_MIN_COLUMNS and keep.any():
        total = np.add.reduce(x, axis=0, dtype=np.float64, where=keep[:, None])
        return np.true_divide(total, np.intp(np.count_nonzero(keep)), out=total)
    return x[keep].mean(axis=0, dtype=np.float64)


# Narrower rows are copied: with a column or a few, numpy may make the rows its inner loop and sum them pairwise,
# and pairwise over the kept rows where they lie is not pairwise over their copy.
_WHERE_MIN_COLUMNS = 16


def robust_z(distances: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """(distance − median) / scale, with 0 where every distance ties."""
    median, scale = _median_scale(np.asarray(distances, dtype=np.float64))
    return _z(distances, median, scale)


def _iterate(
    x: npt.NDArray[np.floating], iterations: int, drop: int | None, threshold: Threshold, k_mad: float
) -> CleanResult:
    n = len(x)
    excluded = np.zeros(n, dtype=bool)  # photos left out of this pass's centroid
    run_start = np.zeros(n, dtype=np.int64)
    for it in range(1, iterations + 1):
        centroid = mean_rows(x, ~excluded)
        distances = row_distances(x, centroid)
        median, scale = _median_scale(distances)
        flagged, cutoff = _cut(distances, drop, threshold, median + k_mad * scale)
        # A photo's run of being flagged starts at the pass where it was flagged after not being flagged.
        run_start = np.where(flagged, np.where(run_start > 0, run_start, it), 0)
        # Same flags as the photos this centroid excluded → the next centroid would be identical. A cut that
        # flags every photo (only an explicit threshold can) leaves nothing to average, so stop there too.
        if np.array_equal(flagged, excluded) or flagged.all():
            break
        excluded = flagged
    return CleanResult(
        order=np.argsort(distances, kind="stable"),
        distances=distances,
        z=_z(distances, median, scale),
        flagged=flagged,
        first_flagged=run_start,
        iterations_run=it,
        centroid=centroid,
        cutoff=cutoff,
    )


def _against_reference(
    x: npt.NDArray[np.float64],
    reference: npt.NDArray[np.floating],
    *,
    iterations: int,
    drop: int | None,
    threshold: Threshold,
    k_mad: float,
) -> CleanResult:
    check_vectors(reference, "reference")
    ref = as_exact64(reference)
    if ref.shape[1] != x.shape[1]:
        raise TypeError(f"reference must have {x.shape[1]} dimensions like vectors; received {ref.shape[1]}")
    # ``drop`` counts photos of the collection being cleaned, so the reference is cut automatically.
    ref_result = _iterate(ref, iterations, None, threshold, k_mad)
    # Same median and scale as the reference's own ranking: a photo is flagged against the reference
    # exactly when it would be an outlier inside the reference collection.
    median, scale = _median_scale(ref_result.distances)
    distances = row_distances(x, ref_result.centroid)
    flagged, cutoff = _cut(distances, drop, threshold, median + k_mad * scale)
    return CleanResult(
        order=np.argsort(distances, kind="stable"),
        distances=distances,
        z=_z(distances, median, scale),
        flagged=flagged,
        first_flagged=flagged.astype(np.int64),  # one pass against a fixed centroid
        iterations_run=1,
        centroid=ref_result.centroid,
        cutoff=cutoff,
    )


def row_distances(x: npt.NDArray[np.floating], centre: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """np.linalg.norm(x - centre, axis=1), equal bit for bit, in blocks of rows: the whole difference at once
    (4,000 x 4,096 float64, 131 MB) is ~10x slower, in page faults and memory traffic. float32 rows give what
    their float64 copy gives: the subtraction casts them to float64 (exactly) first. The norm is numpy's own
    formula for a vector norm along an axis, sqrt(add.reduce(d * d)), squared in place (one temporary, not 3)."""
    out = np.empty(len(x))
    for start in range(0, len(x), _DISTANCE_ROWS):
        d = x[start : start + _DISTANCE_ROWS] - centre
        np.multiply(d, d, out=d)
        np.sqrt(np.add.reduce(d, axis=1), out=out[start : start + _DISTANCE_ROWS])
    return out


_DISTANCE_ROWS = 32  # 1 MB float64 temporaries: in cache (256 rows: 8 MB, twice as slow)


def _cut(
    distances: npt.NDArray[np.float64], drop: int | None, threshold: Threshold, auto_cutoff: float
) -> tuple[npt.NDArray[np.bool_], float]:
    if drop is not None:
        flagged = np.zeros(len(distances), dtype=bool)
        order = np.argsort(distances, kind="stable")
        flagged[order[len(order) - drop :]] = True
        kept = distances[~flagged]
        return flagged, float(kept.max())
    cutoff = auto_cutoff if threshold == "auto" else float(threshold)
    return distances > cutoff, float(cutoff)


def _median_scale(distances: npt.NDArray[np.float64]) -> tuple[float, float]:
    median = float(np.median(distances))
    deviations = np.abs(distances - median)
    scale = MAD_SCALE * float(np.median(deviations))
    if scale == 0.0:
        scale = MEAN_AD_SCALE * float(deviations.mean())
    if scale <= _SCALE_FLOOR * median:
        scale = _SCALE_FLOOR * median if median > 0 else 0.0
    return median, scale


def _z(distances: npt.NDArray[np.floating], median: float, scale: float) -> npt.NDArray[np.float64]:
    centred = np.asarray(distances, dtype=np.float64) - median
    if scale == 0.0:  # every distance equals the median: nobody is unusual
        return np.zeros_like(centred)
    return centred / scale


def check_vectors(vectors: object, name: str) -> None:
    """Raise TypeError unless ``vectors`` is a non-empty 2-D float array, ValueError if it holds NaN/inf."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        shape = getattr(vectors, "shape", type(vectors).__name__)
        raise TypeError(f"{name} must be a 2-D numpy array (photos × dimensions); received {shape}")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise TypeError(f"{name} must hold floats; received dtype {vectors.dtype}")
    if len(vectors) == 0:
        raise ValueError(f"{name} is empty: there are no photos to rank")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{name} contain NaN or infinite values")


def _check_options(n: int, iterations: int, drop: int | None, threshold: Threshold, k_mad: float) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, Integral) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1; received {iterations!r}")
    if drop is not None:
        if isinstance(drop, bool) or not isinstance(drop, Integral) or drop < 0:
            raise ValueError(f"drop must be an integer >= 0; received {drop!r}")
        if drop >= n:
            raise ValueError(f"drop must be < number of photos ({n}); received {drop}")
        if threshold != "auto":
            raise ValueError(f"pass either drop or threshold, not both; received drop={drop}, threshold={threshold}")
    if threshold != "auto" and (isinstance(threshold, bool) or not isinstance(threshold, Real) or not threshold >= 0):
        raise ValueError(f'threshold must be "auto" or a distance >= 0; received {threshold!r}')
    if isinstance(k_mad, bool) or not isinstance(k_mad, Real) or not k_mad > 0:
        raise ValueError(f"k_mad must be > 0; received {k_mad!r}")
