"""Groups of photos that are the same picture: `exact` (identical bytes or identical decoded pixels) and `near`
(the same picture re-encoded, resized, cropped a little, watermarked or colour-tweaked), kept apart from different
photos of the same scene.

Pure functions over the stored unit vectors and a few facts per photo; no store, no files.

- Distance is cosine distance, 1 - cos, on the unit vectors (what `similar` scores as cos).
- Memory stays bounded at any size: a k-NN search, exact up to FLAT_MAX vectors (the similarity matrix's upper
  triangle, a band of rows of at most SELF_BLOCK_BYTES at a time: half the multiply-adds of a search of every
  vector against all), an IVF index above (batches of queries). Only the pairs under the cut are kept; groups are
  the connected components of those pairs (scipy's union-find on a sparse graph). Never an n x n matrix.
- A group's `max_distance` is the largest distance between any two of its members (single linkage can chain,
  so it may exceed the threshold; it says how tight the group is).
- Horizontal flips count as different pictures: a mirrored photo is a different training sample (it is the
  cheapest augmentation there is, and a trainer that wants it adds it itself), and mirrored text or faces are not
  the same picture to a person. Average-pooled VGG features barely change under a flip (0.02-0.04 cosine
  distance on block5_pool), so with the pixel check a pair under the cut is asked only that: is it a mirror image?
- With the pixel check (search/pixels.py), a pair under the cut is the same picture whatever else the pixels say
  (a stamped text box, logo or border moves the vectors by 0.0001-0.015 but can pull the pixel correlation under
  its cut); pairs between the cut and VERIFY_FACTOR x the cut (crops, look-alikes) are grouped only when their
  pixels align.
- Keep policy per group: the largest original (pixels, then bytes), then the most permissive licence
  (indexer/licenses.py PERMISSIVENESS), then the earliest upload, then the lowest id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from imgidx.indexer.embedders import vgg16
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.licenses import license_rank

# Calibrated cuts (cosine distance) per model/layer with ImageNet weights, from bench/duplicates.py on the shared
# cat/dog photos: see CALIBRATION below for the numbers behind them.
CALIBRATED: dict[tuple[str, str], float] = {(vgg16.NAME, layer): cut for layer, cut in vgg16.DUPLICATE_CUTS.items()}
# Without a calibrated cut (fc2, random or unknown weights): this fraction of the median nearest-neighbour distance.
# On block5_pool the calibrated cut is ~0.2 of the median NN distance between distinct photos.
NN_FRACTION = 0.2
# With a verifier (search/pixels.py), pairs between the cut and VERIFY_FACTOR x the cut are grouped when their
# pixels align: crops reach ~0.13 on block5_pool while distinct similar photos start at ~0.09.
VERIFY_FACTOR = 3.0
K = 16  # neighbours per photo: a group larger than K+1 still joins through chains of neighbours
BATCH = 2048  # queries per FAISS call: bounds the neighbour arrays to BATCH x (K+1)
FLAT_MAX = 20_000  # exact search up to here; above, an IVF index (near duplicates share a cell or a probed one)
SELF_BLOCK_BYTES = 64 << 20  # similarities computed at once by the exact search (4,096 x 4,096 float32)
IVF_LISTS_PER_SQRT_N = 4  # nlist = 4 sqrt(n): ~80 vectors a list
IVF_NPROBE = 8
IVF_TRAIN_PER_LIST = 32


@dataclass(frozen=True)
class PhotoFacts:
    """What the keep policy and the exact match need about one photo (all optional but the id)."""

    id: int
    sha256: str | None = None  # of the file bytes
    pixels_sha256: str | None = None  # of the decoded pixels, when the caller computed it
    width: int | None = None  # of the original the file holds
    height: int | None = None
    size_bytes: int | None = None
    license: int | None = None  # Flickr licence id
    date_upload: str = ""  # Flickr's unix time string, or ISO 8601
    collections: tuple[str, ...] = ()


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact" | "near"
    keep: int
    ids: tuple[int, ...]  # keep first, then the others in keep-policy order
    max_distance: float
    collections: tuple[str, ...] = ()

    @property
    def drop(self) -> tuple[int, ...]:
        return self.ids[1:]

    @property
    def spans_collections(self) -> bool:
        return len(self.collections) > 1

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "keep": self.keep,
            "ids": list(self.ids),
            "max_distance": round(self.max_distance, 6),
            "collections": list(self.collections),
        }


@dataclass(frozen=True)
class Duplicates:
    groups: tuple[DuplicateGroup, ...]
    threshold: float
    rule: str  # how the threshold was chosen
    photos: int
    search: str  # "flat" | "ivf:NLIST/NPROBE" | "none"
    nn_median: float | None = None  # median nearest-neighbour distance (what the data-driven rule scales)
    verified_up_to: float | None = None  # with a verifier: pairs up to here were grouped only if it agreed
    verified_pairs: int = 0  # pairs between the cut and verified_up_to the verifier was asked about
    confirmed_pairs: int = 0  # ... and confirmed
    mirror_checked_pairs: int = 0  # pairs under the cut asked whether they are mirror images
    mirrored_pairs: int = 0  # ... and kept apart as such

    @property
    def dropped(self) -> frozenset[int]:
        """Photos that the keep policy leaves out (what `--apply` flags)."""
        return frozenset(pid for g in self.groups for pid in g.drop)

    def as_dict(self) -> dict:
        return {
            "groups": [g.as_dict() for g in self.groups],
            "threshold": round(self.threshold, 6),
            "rule": self.rule,
            "photos": self.photos,
            "search": self.search,
            "nn_median": None if self.nn_median is None else round(self.nn_median, 6),
            "verified_up_to": None if self.verified_up_to is None else round(self.verified_up_to, 6),
            "verified_pairs": self.verified_pairs,
            "confirmed_pairs": self.confirmed_pairs,
            "mirror_checked_pairs": self.mirror_checked_pairs,
            "mirrored_pairs": self.mirrored_pairs,
            "duplicates": len(self.dropped),
        }


def find_duplicates(
    vectors: npt.NDArray[np.float32],
    facts: Sequence[PhotoFacts],
    *,
    threshold: str | float = "auto",
    model: tuple[str, str] | None = None,
    k: int = K,
    batch: int = BATCH,
    search: str = "auto",
    verify: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.bool_]] | None = None,
) -> Duplicates:
    """Duplicate groups among `vectors` (unit rows, aligned with `facts`).

    threshold: a cosine distance, or "auto": the calibrated cut for `model` ((model, layer), ImageNet weights),
    else NN_FRACTION x the median nearest-neighbour distance of these vectors. search: "auto" | "flat" | "ivf".
    verify(pairs) -> bool per pair (rows of (i, j) positions), optional: a second opinion (search/pixels.py);
    with it, pairs between the threshold and VERIFY_FACTOR x the threshold are grouped only when it agrees. Pairs
    under the threshold are grouped whatever it says, except those its `mirrored(pairs)` (where it has one, as
    pixels.PixelCheck does) calls mirror images. Exact bytes or pixels always group."""
    n = len(facts)
    if vectors.shape[0] != n:
        raise ConfigError(f"{vectors.shape[0]} vectors for {n} photos")
    cut, rule = _given(threshold, model)
    exact_edges = _exact_edges(facts)
    if n < 2:
        return Duplicates((), cut if cut is not None else 0.0, rule or "auto", n, "none")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # With "auto" and no calibrated cut the threshold depends on the NN distances, found in the same pass:
    # keep candidate pairs up to a generous bound and filter once the cut is known.
    bound = 0.5 if cut is None else min(2.0, cut * VERIFY_FACTOR) if verify else cut
    pairs, dists, nn1, how = _near_pairs(vectors, bound, k=k, batch=batch, search=search)
    nn_median = median(nn1[np.isfinite(nn1)]) if np.isfinite(nn1).any() else None
    if cut is None:
        cut = min(bound, NN_FRACTION * (nn_median or 0.0))
        rule = f"{NN_FRACTION} x median nearest-neighbour distance"
    pairs, dists = _dedupe_pairs(pairs, dists)
    upto = min(2.0, cut * VERIFY_FACTOR) if verify else None
    sure = dists <= cut
    asked = confirmed = mirror_asked = mirrored = 0
    mirror_check = getattr(verify, "mirrored", None)
    if mirror_check is not None:
        # pooled features barely see a mirror image (flips sit at 0.02-0.04 on block5_pool), the pixels do
        under = np.flatnonzero(sure)
        mirror_asked = len(under)
        if mirror_asked:
            flip = np.asarray(mirror_check(pairs[under]), dtype=bool)
            mirrored = int(flip.sum())
            sure[under[flip]] = False
    if verify is not None:
        band = np.flatnonzero((dists > cut) & (dists <= upto))
        asked = len(band)
        if asked:
            ok = np.asarray(verify(pairs[band]), dtype=bool)
            confirmed = int(ok.sum())
            sure[band[ok]] = True
    pairs = pairs[sure]
    graph = np.concatenate([pairs, exact_edges]) if len(exact_edges) else pairs
    groups = _components(n, graph)
    exact_label = _components_labels(n, exact_edges)
    out = []
    for members in groups:
        kind = "exact" if len({exact_label[m] for m in members}) == 1 else "near"
        ordered = sorted(members, key=lambda m: _keep_key(facts[m]))
        ids = tuple(facts[m].id for m in ordered)
        colls = sorted({c for m in members for c in facts[m].collections})
        out.append(DuplicateGroup(kind, ids[0], ids, _max_distance(vectors, ordered), tuple(colls)))
    out.sort(key=lambda g: (g.kind != "exact", -len(g.ids), g.keep))
    return Duplicates(tuple(out), float(cut), rule, n, how, nn_median, upto, asked, confirmed, mirror_asked, mirrored)


def median(x: npt.NDArray[np.float32]) -> float:
    """np.median of a non-empty array without NaNs, bit for bit: the middle one or two values by partition, then
    their np.mean, as numpy does; without numpy's NaN check, which imports numpy.ma."""
    n = len(x)
    part = np.partition(x, [(n - 1) // 2, n // 2])
    return float(np.mean(part[(n - 1) // 2 : n // 2 + 1]))


def _given(threshold: str | float, model: tuple[str, str] | None) -> tuple[float | None, str]:
    if isinstance(threshold, str) and threshold != "auto":
        try:
            threshold = float(threshold)
        except ValueError:
            raise ConfigError(f"threshold must be 'auto' or a number between 0 and 2; received {threshold!r}") from None
    if threshold == "auto":
        if model in CALIBRATED:
            return CALIBRATED[model], f"calibrated for {model[0]}/{model[1]}"
        return None, ""
    t = float(threshold)
    if not (0.0 <= t <= 2.0) or math.isnan(t):
        raise ConfigError(f"threshold must be a cosine distance between 0 and 2; received {threshold!r}")
    return t, "given"


def _exact_edges(facts: Sequence[PhotoFacts]) -> npt.NDArray[np.int64]:
    """Pairs (first, other) of photos with the same file bytes or the same decoded pixels."""
    first: dict[tuple[str, str], int] = {}
    edges = []
    for i, f in enumerate(facts):
        for key in (("b", f.sha256), ("p", f.pixels_sha256)):
            if key[1]:
                j = first.setdefault(key, i)
                if j != i:
                    edges.append((j, i))
    return np.array(edges, dtype=np.int64).reshape(-1, 2)


def _near_pairs(
    v: npt.NDArray[np.float32], bound: float, *, k: int, batch: int, search: str, self_max: int = FLAT_MAX
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32], str]:
    """Pairs (i, j), i < j, with cosine distance <= bound among each row's k nearest, their distances, and each
    row's nearest-neighbour distance (inf when it has none). Exact search up to self_max rows by _self_knn, else
    batch queries at a time (faiss.knn, or IVF)."""
    n = len(v)
    kk = min(k + 1, n)
    if _self_search(n, kk, search, self_max):
        blocks: Iterable = [(0, *_self_knn(v, kk))]
        how = "flat"
    else:
        index, how = _index(v, search)
        blocks = ((start, *index.search(v[start : start + batch], kk)) for start in range(0, n, batch))
    found_pairs, found_dists = [], []
    nn1 = np.full(n, np.inf, dtype=np.float32)
    for start, sims, nbrs in blocks:
        rows = np.arange(start, start + len(sims))[:, None]
        dist = 1.0 - sims
        valid = (nbrs >= 0) & (nbrs != rows)
        nn1[start : start + len(sims)] = np.where(valid, dist, np.inf).min(axis=1)
        hit = valid & (dist <= bound)
        i = np.broadcast_to(rows, nbrs.shape)[hit]
        j = nbrs[hit]
        found_pairs.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
        found_dists.append(dist[hit].astype(np.float32))
    pairs = np.concatenate(found_pairs).astype(np.int64) if found_pairs else np.empty((0, 2), np.int64)
    dists = np.concatenate(found_dists) if found_dists else np.empty(0, np.float32)
    return pairs, np.clip(dists, 0.0, None), np.clip(nn1, 0.0, None), how


def _dedupe_pairs(pairs, dists):
    """Each pair once (i's list and j's list both hold it), with its smaller distance."""
    if not len(pairs):
        return pairs, dists
    order = np.lexsort((dists, pairs[:, 1], pairs[:, 0]))
    pairs, dists = pairs[order], dists[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    return pairs[first], dists[first]


def _self_search(n: int, kk: int, search: str, self_max: int) -> bool:
    """Whether _self_knn answers (the exact search) rather than _index."""
    import faiss

    _check_search(search)
    # from the reservoir size on, faiss.knn keeps another top-k (ties may fall otherwise): leave those to it
    return search in ("auto", "flat") and n <= self_max and kk < faiss.cvar.distance_compute_min_k_reservoir


def _self_knn(
    v: npt.NDArray[np.float32], kk: int, block_bytes: int = SELF_BLOCK_BYTES
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """faiss.knn(v, v, kk) by inner product from the upper triangle of v v^T, half its multiply-adds: a band of
    rows at a time, its square on the diagonal by BLAS syrk (numpy's choice for a matrix times its own transpose)
    and the rest of the band by sgemm, whose transpose serves the rows below. faiss's own heap (the one faiss.knn
    fills) picks each row's kk largest, fed every row's columns in ascending order as faiss.knn feeds them, so the
    same neighbours are kept, ties and NaNs included. Scores may differ from faiss.knn's in the last bit (another
    BLAS call, another summation order)."""
    import faiss

    n = len(v)
    top = np.empty((n, kk), dtype=np.float32)
    ids = np.empty((n, kk), dtype=np.int64)
    heap = faiss.float_minheap_array_t()  # keeps the largest: faiss.knn's heap for inner products
    heap.nh, heap.k = n, kk
    heap.val, heap.ids = faiss.swig_ptr(top), faiss.swig_ptr(ids)
    heap.heapify()
    rows = max(1, block_bytes // (4 * n))
    for a in range(0, n, rows):
        b = min(a + rows, n)
        band = v[a:b]
        # rows a..b got their columns before a from the earlier bands (as those bands' transposes); now a..b,
        # then b..n: ascending, which decides which of several tied values a full heap keeps
        square = np.ascontiguousarray(band @ band.T)
        heap.addn(b - a, faiss.swig_ptr(square), a, a, b - a)
        del square
        if b < n:
            rest = band @ v[b:].T
            heap.addn(n - b, faiss.swig_ptr(rest), b, a, b - a)
            # the same values for rows b..n (their columns a..b), transposed a few rows at a time: no second copy
            # of the whole band
            step = max(1, block_bytes // 16 // (4 * (b - a)))
            for c in range(b, n, step):
                below = np.ascontiguousarray(rest[:, c - b : c - b + step].T)
                heap.addn(b - a, faiss.swig_ptr(below), a, c, len(below))
    heap.reorder()
    return top, ids


def _check_search(search: str) -> None:
    if search not in ("auto", "flat", "ivf"):
        raise ConfigError(f"search must be auto, flat or ivf; received {search!r}")


def _index(v: npt.NDArray[np.float32], search: str):
    import faiss

    n, d = v.shape
    _check_search(search)
    if search == "flat" or (search == "auto" and n <= FLAT_MAX):
        return _Flat(v), "flat"
    nlist = max(1, int(IVF_LISTS_PER_SQRT_N * math.sqrt(n)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)  # a fixed training sample: the same input gives the same groups
    sample = v[np.sort(rng.choice(n, min(n, nlist * IVF_TRAIN_PER_LIST), replace=False))]
    index.train(sample)
    index.add(v)
    index.nprobe = min(IVF_NPROBE, nlist)
    return index, f"ivf:{nlist}/{index.nprobe}"


class _Flat:
    """Exact inner-product k-NN over the rows of `v`: faiss.knn, the function IndexFlatIP.search calls, on `v`
    itself (an IndexFlatIP first copies all of it: 64 MB for 4,000 x 4,096)."""

    def __init__(self, v: npt.NDArray[np.float32]):
        self.v = v

    def search(self, q: npt.NDArray[np.float32], k: int):
        import faiss

        return faiss.knn(q, self.v, k, metric=faiss.METRIC_INNER_PRODUCT)


def _components(n: int, edges: npt.NDArray[np.int64]) -> list[list[int]]:
    """Connected components with more than one member, each sorted."""
    labels = _components_labels(n, edges)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_labels)) + 1, [n]]).tolist()
    # only the components with company are cut out (np.split made an array of every lone photo too)
    return [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b - a > 1]


def _components_labels(n: int, edges: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if not len(edges):
        return np.arange(n)
    # imported here, after the common no-edge case: scipy.sparse costs ~0.3 s to import
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _max_distance(v: npt.NDArray[np.float32], members: list[int], block: int = 1024) -> float:
    """Largest pairwise cosine distance in the group, block x block at a time."""
    worst = -1.0
    idx = np.array(members)
    for a in range(0, len(idx), block):
        va = v[idx[a : a + block]]
        for b in range(a, len(idx), block):
            sims = va @ v[idx[b : b + block]].T
            worst = max(worst, float(1.0 - sims.min()))
    return max(0.0, worst)


def keep_order(facts: Sequence[PhotoFacts]) -> list[PhotoFacts]:
    """The keep policy: the first is kept (largest original, most permissive licence, earliest upload, lowest id)."""
    return sorted(facts, key=_keep_key)


def _keep_key(f: PhotoFacts) -> tuple:
    pixels = (f.width or 0) * (f.height or 0)
    return (-pixels, -(f.size_bytes or 0), license_rank(f.license), upload_time(f.date_upload), f.id)


def upload_time(text: str) -> float:
    """Seconds since the epoch from Flickr's unix-time string or ISO 8601; unknown sorts last (inf)."""
    text = (text or "").strip()
    if not text:
        return math.inf
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.inf
