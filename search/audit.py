"""Find photos that probably carry the wrong label, without training a model.

Two independent hints, both computed on the fc2 vectors of two or more labelled collections:

* centroid: the photo is closer to another collection's robust centroid than to its own (the centroids
  come from :func:`search.cleanup.clean_ranking`, so the mislabelled photos themselves are left out);
* neighbours: most (> 50 %) of its k nearest photos by cosine similarity belong to one other collection.

Pure numpy; the caller loads the vectors and labels and decides what to do with the suspects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import numpy.typing as npt

from .cleanup import check_vectors, clean_ranking

# Rows of the similarity matrix computed at once: 1024 × 10k float32 is 40 MB, whatever the collection size.
_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class PhotoAudit:
    """The verdict for one photo (row ``index`` of the input)."""

    index: int
    label: str  # the label it was given
    suggested: str  # the label the evidence points to (== label when nothing is wrong)
    margin: float  # own-centroid distance − nearest other centroid distance; > 0 means closer to the other
    agreement: float  # share of its k nearest neighbours that carry its own label
    reasons: tuple[str, ...]  # empty when the photo looks fine

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class AuditResult:
    classes: tuple[str, ...]  # sorted collection labels; the row order of ``centroids``
    centroids: npt.NDArray[np.float64]  # (len(classes), d) robust centroid of each collection
    photos: tuple[PhotoAudit, ...]  # one per input row, in input order
    k: int  # neighbours actually used (k is capped at n − 1)

    @property
    def suspects(self) -> list[PhotoAudit]:
        """Flagged photos, the most confidently wrong first (largest margin, then lowest agreement)."""
        flagged = [p for p in self.photos if p.flagged]
        return sorted(flagged, key=lambda p: (-p.margin, p.agreement, p.index))


def audit_labels(
    vectors: npt.NDArray[np.floating], labels: Sequence[str], *, k: int = 10, iterations: int = 5
) -> AuditResult:
    """Check every photo's label against the centroids and the nearest neighbours of all collections."""
    check_vectors(vectors, "vectors")
    names = [str(label) for label in labels]
    if len(names) != len(vectors):
        raise ValueError(f"labels must have one entry per vector ({len(vectors)}); received {len(names)}")
    classes = tuple(sorted(set(names)))
    if len(classes) < 2:
        raise ValueError(f"audit needs at least 2 collections to compare; received {list(classes)}")
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1; received {k!r}")
    k = min(int(k), len(vectors) - 1)  # two collections guarantee n >= 2, so k >= 1
    codes = np.searchsorted(classes, names)

    centroids = np.stack(
        [clean_ranking(vectors[codes == c], iterations=iterations).centroid for c in range(len(classes))]
    )
    to_centroids, neighbours = _distances_and_neighbours(vectors, centroids, k)
    photos = tuple(_judge(i, codes[i], to_centroids[i], codes[neighbours[i]], classes) for i in range(len(vectors)))
    return AuditResult(classes=classes, centroids=centroids, photos=photos, k=k)


def nearest_neighbours(vectors: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.intp]:
    """(n, k) row indices of each row's k most cosine-similar other rows, most similar first."""
    check_vectors(vectors, "vectors")
    if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= k < len(vectors):
        raise ValueError(f"k must be between 1 and the number of photos − 1 ({len(vectors) - 1}); received {k!r}")
    return _distances_and_neighbours(vectors, np.zeros((0, vectors.shape[1])), k)[1]


def _distances_and_neighbours(
    vectors: npt.NDArray[np.floating], centroids: npt.NDArray[np.float64], k: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Euclidean distances to each centroid (n, c) and the k cosine nearest other rows (n, k), in row blocks."""
    unit = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = unit / np.where(norms > 0, norms, 1.0)  # an all-zero vector stays zero: similarity 0 to everything
    n = len(unit)
    distances = np.empty((n, len(centroids)))
    neighbours = np.empty((n, k), dtype=np.intp)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        block = np.asarray(vectors[start:stop], dtype=np.float64)
        # |x − c|² = |x|² − 2x·c + |c|², as a matrix product instead of an (n, c, d) difference array.
        squared = (block**2).sum(1)[:, None] - 2 * block @ centroids.T + (centroids**2).sum(1)[None, :]
        distances[start:stop] = np.sqrt(np.maximum(squared, 0.0))
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # a photo is not its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        # Sort the k by similarity, ties by index, so the result does not depend on argpartition's order.
        order = np.lexsort((top, -top_sims), axis=1)
        neighbours[start:stop] = np.take_along_axis(top, order, axis=1)
    return distances, neighbours


def _judge(
    index: int,
    own: int,
    to_centroids: npt.NDArray[np.float64],
    neighbour_codes: npt.NDArray[np.intp],
    classes: tuple[str, ...],
) -> PhotoAudit:
    others = np.delete(np.arange(len(classes)), own)
    nearest_other = int(others[np.argmin(to_centroids[others])])
    margin = float(to_centroids[own] - to_centroids[nearest_other])
    counts = np.bincount(neighbour_codes, minlength=len(classes))
    k = len(neighbour_codes)
    own_count = int(counts[own])
    counts[own] = -1
    majority = int(np.argmax(counts))  # the most common other label among the neighbours

    reasons = []
    suggested = own
    if margin > 0:
        reasons.append(f"closer to {classes[nearest_other]} centroid")
        suggested = nearest_other
    if counts[majority] * 2 > k:
        reasons.append(f"{counts[majority]}/{k} neighbours are {classes[majority]}")
        # A strict majority of actual photos is more specific evidence than a centroid, so it wins.
        suggested = majority
    return PhotoAudit(
        index=index,
        label=classes[own],
        suggested=classes[suggested],
        margin=margin,
        agreement=own_count / k,
        reasons=tuple(reasons),
    )
