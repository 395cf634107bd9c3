"""FAISS index kinds, chosen by size: exact (flat) while small, IVF beyond, HNSW by hand.

The FAISS index is derived data: it is always built from the exact float32 vectors the store keeps, and can be
rebuilt at any time (`imgidx reindex --kind ...`). Measured at 4096-d on synthetic clustered vectors (README
"Performance", `python -m bench.run --only search`): flat costs ~1.2 ms per 1k vectors per query, so it stays
exact up to FLAT_MAX vectors; IVF (nlist ~ 4*sqrt(n), nprobe 32, float16 codes: half the memory, same recall)
keeps recall@10 >= 0.95 at a few ms per query beyond. HNSW is offered by hand: faster per query, but slow to
build at 4096-d, more memory, no removal (the index is rebuilt instead) and lower recall at equal effort.
PCA+PQ is not offered: recall@10 ~0.56 at these sizes. IVF-PQ (128-byte codes at 4096-d) is, beyond what a
float16 IVF fits in policy.ivf_memory (a million photos: 8 GB as float16 IVF, 130 MB as IVF-PQ): its candidates
(policy.rerank per wanted neighbour) are re-ranked with the exact stored vectors, which restores part of the
recall its coarse codes lose (measured in README "A million photos").

Kinds on disk: flat = IndexIDMap2(IndexFlatIP); ivf = IndexIVFScalarQuantizer(fp16, inner product, own ids);
ivfpq = IndexIVFPQ(inner product, 8-bit codes, own ids); hnsw = IndexIDMap2(IndexHNSWSQ(fp16)). Every kind holds
the photo ids as FAISS ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
CHOICES = (*KINDS, "auto")
FLAT_MAX = 50_000
PQ_TRAIN = 256 * 39  # IVF-PQ: fewest training vectors (FAISS warns below 39 per code of a sub-quantizer)
IVF_MEMORY = 2 << 30  # auto: a float16 IVF up to this many bytes of codes (262k vectors at 4096-d); IVF-PQ beyond


@dataclass(frozen=True)
class Policy:
    flat_max: int = FLAT_MAX  # exact search up to here; IVF beyond (back to flat below half of it)
    nprobe: int = 32  # IVF lists visited per query
    fp16: bool = True  # IVF/HNSW codes in float16 (cosine error ~1e-4; flat stays float32)
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_per_list: int = 40  # IVF training sample: this many vectors per list (FAISS warns below 39)
    train_iterations: int = 10  # k-means iterations (FAISS' 25 cost 2.5x the time for no recall we can measure)
    ivf_memory: int = IVF_MEMORY  # auto: IVF-PQ once a float16 IVF's codes would take more than this
    pq_dims: int = 32  # IVF-PQ: one byte per this many dimensions (128 bytes a 4096-d vector, 1/64 of float16)
    pq_nlist_max: int = 1024  # IVF-PQ lists: assigning 1M vectors to 4k lists costs 4x the build for no recall
    rerank: int = 50  # IVF-PQ: candidates per wanted neighbour, re-ranked with the stored vectors (4 MB at k=10)


DEFAULT = Policy()


def check_kind(kind: str) -> str:
    if kind not in CHOICES:
        raise ValueError(f"index kind must be one of {'|'.join(CHOICES)}; received {kind!r}")
    return kind


def choose_kind(n: int, policy: Policy = DEFAULT, dim: int = 4096) -> str:
    """The kind an index of n vectors should be: exact while small, IVF beyond policy.flat_max, IVF-PQ once a
    float16 IVF would outgrow policy.ivf_memory."""
    if n <= policy.flat_max:
        return "flat"
    return "ivf" if n * dim * 2 <= policy.ivf_memory else "ivfpq"


def pq_bytes(dim: int, policy: Policy = DEFAULT) -> int:
    """IVF-PQ code size: about dim / policy.pq_dims bytes, a divisor of dim (FAISS splits it evenly)."""
    m = max(1, dim // policy.pq_dims)
    while dim % m:
        m -= 1
    return m


def rerank_factor(index) -> int:
    """How many candidates per wanted neighbour a search of `index` asks for, to re-rank with stored vectors."""
    return DEFAULT.rerank if kind_of(index) == "ivfpq" else 1


def nlist_for(n: int, policy: Policy = DEFAULT) -> int:
    """~4*sqrt(n) lists, but never fewer training vectors per list than FAISS asks for."""
    return max(1, min(int(4 * math.sqrt(n)), n // policy.train_per_list))


def kind_of(index) -> str:
    if index is None:
        return "none"
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return type(inner).__name__


def describe(index) -> dict:
    """What `imgidx info` shows: kind, size, storage and the search settings."""
    import faiss

    out: dict = {"kind": kind_of(index), "size": int(index.ntotal) if index is not None else 0}
    if index is None:
        return out
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else faiss.downcast_index(index)
    out["storage"] = "float16" if _is_fp16(inner) else "float32"
    if out["kind"] == "ivfpq":
        out.update(storage=f"pq{inner.pq.M}x{inner.pq.nbits}", nlist=int(inner.nlist), nprobe=int(inner.nprobe))
    elif out["kind"] == "ivf":
        out.update(nlist=int(inner.nlist), nprobe=int(inner.nprobe))
    elif out["kind"] == "hnsw":
        out.update(M=int(inner.hnsw.nb_neighbors(1)), efSearch=int(inner.hnsw.efSearch))
    return out


def new_flat(dim: int):
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def build(
    kind: str,
    dim: int,
    ids: Sequence[int],
    vectors: Callable[[Sequence[int]], npt.NDArray[np.float32]],
    *,
    policy: Policy = DEFAULT,
    chunk: int = 4096,
    seed: int = 0,
):
    """A new index of `kind` (auto: by size) holding `ids`, whose exact vectors `vectors(list_of_ids)` returns."""
    import faiss

    kind = choose_kind(len(ids), policy, dim) if check_kind(kind) == "auto" else kind
    ids = np.asarray(ids, dtype=np.int64)
    if kind == "ivfpq" and len(ids) < PQ_TRAIN:
        kind = "ivf"  # too few vectors to train the 256 codes of each PQ sub-quantizer
    if kind == "ivf" and len(ids) < policy.train_per_list:
        kind = "flat"  # too few vectors to train even one list
    if kind == "flat":
        index = new_flat(dim)
    elif kind == "hnsw":
        if policy.fp16:
            inner = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            inner = faiss.IndexHNSWFlat(dim, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction, inner.hnsw.efSearch = policy.ef_construction, policy.ef_search
        index = faiss.IndexIDMap2(inner)  # (faiss' Python wrapper keeps `inner` alive with it)
        if policy.fp16:
            inner.train(np.zeros((1, dim), dtype=np.float32))  # fp16 needs no statistics
    else:
        if kind == "ivfpq":
            index = _new_ivfpq(dim, min(policy.pq_nlist_max, nlist_for(len(ids), policy)), policy)
        else:
            index = _new_ivf(dim, nlist_for(len(ids), policy), policy)
        rng = np.random.default_rng(seed)
        wanted = index.nlist * policy.train_per_list
        if kind == "ivfpq":
            wanted = max(wanted, PQ_TRAIN)  # each sub-quantizer's 256 codes need their own training points
        sample = np.sort(rng.choice(ids, size=min(len(ids), wanted), replace=False))
        index.train(vectors(sample.tolist()))
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        index.add_with_ids(np.ascontiguousarray(vectors(part.tolist()), dtype=np.float32), part)
    return index


def _new_ivf(dim: int, nlist: int, policy: Policy):
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    if policy.fp16:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = min(policy.nprobe, nlist)
    index.cp.niter = policy.train_iterations
    return index


def _new_ivfpq(dim: int, nlist: int, policy: Policy):
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_bytes(dim, policy), 8, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = min(policy.nprobe, nlist)
    index.cp.niter = policy.train_iterations
    index.pq.cp.niter = policy.train_iterations
    return index


def rebuild_target(index, requested: str, policy: Policy = DEFAULT) -> str | None:
    """The kind to rebuild `index` into, or None to keep it. Only `auto` ever changes on its own: flat grows
    into IVF past policy.flat_max (and shrinks back below half of it), and IVF is retrained once its list count
    falls below half of ~4*sqrt(n) (the collection grew 4x)."""
    if index is None or requested != "auto":
        return None
    n, kind = int(index.ntotal), kind_of(index)
    if kind == "flat":
        return choose_kind(n, policy, index.d) if n > policy.flat_max else None
    if kind in ("ivf", "ivfpq"):
        if n < policy.flat_max // 2:
            return "flat"
        want = choose_kind(n, policy, index.d)
        if want != kind and (kind == "ivf" or n * index.d * 2 < policy.ivf_memory // 2):
            return want  # grew past the memory budget (or shrank well below it)
        import faiss

        nlist = faiss.extract_index_ivf(index).nlist
        wanted = nlist_for(n, policy) if kind == "ivf" else min(policy.pq_nlist_max, nlist_for(n, policy))
        return kind if wanted >= 2 * nlist else None
    return None


def ids_of(index) -> npt.NDArray[np.int64]:
    """Every id the index holds (any kind)."""
    import faiss

    if index is None or index.ntotal == 0:
        return np.empty(0, dtype=np.int64)
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    invlists = faiss.extract_index_ivf(index).invlists
    parts = []
    for lst in range(invlists.nlist):
        size = invlists.list_size(lst)
        if size:
            ptr = invlists.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.empty(0, dtype=np.int64)


def remove_ids(index, ids: Sequence[int] | npt.NDArray[np.int64]):
    """Remove `ids` (those present); returns the index to use from now on (HNSW cannot remove: it is rebuilt)."""
    import faiss

    ids = np.asarray(ids, dtype=np.int64)
    if index is None or index.ntotal == 0 or not len(ids):
        return index
    if kind_of(index) != "hnsw":
        index.remove_ids(faiss.IDSelectorBatch(ids))
        return index
    held = ids_of(index)
    keep = ~np.isin(held, ids)
    if keep.all():
        return index
    inner = faiss.downcast_index(index.index)
    stored = inner.reconstruct_n(0, inner.ntotal)[keep]  # fp16 -> float32 -> fp16 is lossless
    lookup = dict(zip(held[keep].tolist(), range(int(keep.sum())), strict=True))
    policy = Policy(
        fp16=_is_fp16(inner),
        hnsw_m=int(inner.hnsw.nb_neighbors(1)),
        ef_construction=int(inner.hnsw.efConstruction),
        ef_search=int(inner.hnsw.efSearch),
    )
    return build("hnsw", index.d, held[keep], lambda part: stored[[lookup[i] for i in part]], policy=policy)


def search_params(index, allowed: Sequence[int] | None):
    """FAISS search parameters for `index`, restricted to `allowed` ids if given.

    A restriction to a small part of the index (one collection) widens the search in proportion, so that an
    approximate kind still meets about as many allowed candidates as an unrestricted search meets in all."""
    import faiss

    if allowed is None:
        return None
    allowed = np.asarray(allowed, dtype=np.int64)
    sel = faiss.IDSelectorBatch(allowed)
    widen = max(1.0, index.ntotal / max(1, len(allowed)))
    kind = kind_of(index)
    if kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        params = faiss.SearchParametersIVF(sel=sel, nprobe=min(ivf.nlist, math.ceil(ivf.nprobe * widen)))
    elif kind == "hnsw":
        ef = faiss.downcast_index(index.index).hnsw.efSearch
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=min(4096, math.ceil(ef * widen)))
    else:
        params = faiss.SearchParameters(sel=sel)
    params.sel_ref = sel  # keep the selector alive as long as the parameters
    return params


def _is_fp16(inner) -> bool:
    import faiss

    sq = getattr(inner, "sq", None)
    if sq is None and isinstance(inner, faiss.IndexHNSW):
        sq = getattr(faiss.downcast_index(inner.storage), "sq", None)
    return sq is not None and sq.qtype == faiss.ScalarQuantizer.QT_fp16


def recall_at_k(
    index,
    ids: Sequence[int],
    vectors: Callable[[Sequence[int]], npt.NDArray[np.float32]],
    *,
    queries: int = 100,
    k: int = 10,
    chunk: int = 4096,
    seed: int = 0,
) -> float:
    """Recall@k of `index` against exact search, with `queries` stored vectors as queries (streamed: the exact
    neighbours are found chunk by chunk, so memory stays small however many vectors there are)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    q = vectors(np.sort(rng.choice(ids, size=min(queries, len(ids)), replace=False)).tolist())
    k = min(k, len(ids))
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        s = np.concatenate([best_s, q @ vectors(part.tolist()).T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(part, (len(q), len(part)))], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    rerank = rerank_factor(index)
    _, got = index.search(np.ascontiguousarray(q, dtype=np.float32), min(k * rerank, len(ids)))
    if rerank > 1:  # as Store.search answers: the candidates re-ranked with their stored vectors
        got = np.array([_rerank(qv, row[row != -1], vectors, k) for qv, row in zip(q, got, strict=True)])
    return float(np.mean([len(set(g) & set(b)) / k for g, b in zip(got.tolist(), best_i.tolist(), strict=True)]))


def _rerank(query, candidates, vectors, k: int) -> list[int]:
    scores = vectors(candidates.tolist()) @ query
    top = np.argsort(-scores, kind="stable")[:k]
    return [int(candidates[j]) for j in top] + [-1] * (k - len(top))


def iter_vectors(index, chunk: int = 4096) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """Every (ids, vectors) the index holds, entry by entry (a duplicated id comes twice), for any kind: what
    `verify` compares with the stored vectors. Vectors are as the index keeps them (float16 ones decoded)."""
    import faiss

    if index is None or index.ntotal == 0:
        return
    if isinstance(index, faiss.IndexIDMap):
        ids = ids_of(index)
        inner = faiss.downcast_index(index.index)
        for start in range(0, len(ids), chunk):
            n = min(chunk, len(ids) - start)
            yield ids[start : start + n], inner.reconstruct_n(start, n)
        return
    ivf = faiss.extract_index_ivf(index)
    invlists, cs = ivf.invlists, ivf.invlists.code_size
    for lst in range(invlists.nlist):
        size = invlists.list_size(lst)
        if not size:
            continue
        all_ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).astype(np.int64)
        all_codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * cs)
        for start in range(0, size, chunk):
            n = min(chunk, size - start)
            codes = all_codes[start * cs : (start + n) * cs].reshape(n, cs).copy()
            yield all_ids[start : start + n], _decode_ivf(ivf, lst, start, codes)


def _decode_ivf(ivf, lst: int, start: int, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    import faiss

    inner, n, d = faiss.downcast_index(ivf), len(codes), ivf.d
    if isinstance(inner, faiss.IndexIVFFlat):
        return codes.view(np.float32).reshape(n, d)
    if isinstance(inner, faiss.IndexIVFScalarQuantizer) and not inner.by_residual:
        return inner.sq.decode(codes)
    out = np.empty((n, d), dtype=np.float32)  # any other IVF: one by one (slow, but exactly what FAISS decodes)
    for i in range(n):
        ivf.reconstruct_from_offset(lst, start + i, faiss.swig_ptr(out[i]))
    return out


def differs(index, have: npt.NDArray[np.float32], want: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Rows where the index's vectors `have` are not the stored float32 vectors `want` as this kind keeps them:
    bitwise for float32 kinds; within float16 rounding (half an ulp: 2**-11 relative, subnormals absolute) for
    float16 ones, where every vector legitimately differs in its last bits."""
    if not is_fp16(index):
        return (have != want).any(axis=1)
    tolerance = 2.0**-10 * np.abs(want) + 2.0**-24  # twice the rounding error of fp16, never a real difference
    return (np.abs(have - want) > tolerance).any(axis=1) | ~np.isfinite(have).all(axis=1)


def is_fp16(index) -> bool:
    """True when the index keeps its vectors in float16 (any kind)."""
    import faiss

    if index is None:
        return False
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else faiss.downcast_index(index)
    return _is_fp16(inner)
