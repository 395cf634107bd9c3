"""Part `search`: latency p50/p99 (one query at a time), recall@10 against exact search, build time and memory
per vector, per index kind, on synthetic clustered 4096-d unit vectors at 10k / 100k / 1M.

1M x 4096 float32 is 16 GB: flat and the float32 kinds are not run there, nor HNSW (~25 min to build at 4096-d
on 2 cores, 8.5 GB); IVF with float16 codes (8 GB) runs when the machine has the memory free, else it is
reported as skipped with the reason. The clusters are well separated, so recall here is an upper bound:
`imgidx reindex` reports recall@10 on the index's own vectors.
Ground truth at 1M is computed exactly by streaming the vectors past the queries in chunks.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .common import Options, mem_available, table

DIM = 4096
CHUNK = 8192
K = 10
THREADS = 0  # FAISS' own default, read at run()


class Clustered:
    """Unit vectors around n/200 random centres with per-cluster spread; any chunk can be regenerated."""

    def __init__(self, n: int, dim: int = DIM, seed: int = 0):
        rng = np.random.default_rng([seed, n])
        self.n, self.dim, self.seed = n, dim, seed
        self.centres = rng.standard_normal((max(16, n // 200), dim), dtype=np.float32)
        self.spread = (0.7 + 0.6 * rng.random(len(self.centres))).astype(np.float32)

    def chunk(self, i: int, size: int | None = None) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.n, i])
        size = size or min(CHUNK, self.n - i * CHUNK)
        lab = rng.integers(0, len(self.centres), size)
        v = self.centres[lab] + self.spread[lab, None] * rng.standard_normal((size, self.dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def chunks(self):
        for i in range((self.n + CHUNK - 1) // CHUNK):
            yield i * CHUNK, self.chunk(i)

    def queries(self, q: int) -> np.ndarray:
        return self.chunk(1 << 40, q)  # same distribution, never indexed


def exact_top(data: Clustered, queries: np.ndarray, k: int = K) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start, v in data.chunks():
        s = np.concatenate([best_s, queries @ v.T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(v)), (len(queries), len(v)))], 1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def index_bytes(index) -> int:
    """Memory the index holds (codes, ids, graph links, coarse centroids), from its structure."""
    import faiss

    from imgidx.indexer import ann

    n, kind = index.ntotal, ann.kind_of(index)
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        return n * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4
    inner = faiss.downcast_index(index.index)
    if kind == "flat":
        return n * (inner.code_size + 8 + 8)  # codes + id map + reverse map
    storage = faiss.downcast_index(inner.storage)
    return n * (storage.code_size + 8 + 8 + 4 + 8) + inner.hnsw.neighbors.size() * 4


def variants():
    from imgidx.indexer import ann

    return {
        "flat (exact, float32)": ("flat", ann.DEFAULT),
        "ivf (float16 codes: the default beyond 50k)": ("ivf", ann.DEFAULT),
        "ivf (float32 codes)": ("ivf", ann.Policy(fp16=False)),
        "hnsw (M 32, ef 128, float16)": ("hnsw", ann.DEFAULT),
        "hnsw (M 32, ef 128, float32)": ("hnsw", ann.Policy(fp16=False)),
    }


def estimate(kind: str, policy, n: int) -> int:
    per = DIM * (2 if policy.fp16 and kind != "flat" else 4) + 16 + (256 if kind == "hnsw" else 0)
    train = ann_train_vectors(n, policy) * DIM * 4 if kind == "ivf" else 0
    return n * per + train + 2 * CHUNK * DIM * 4


def ann_train_vectors(n: int, policy) -> int:
    from imgidx.indexer import ann

    return min(n, ann.nlist_for(n, policy) * policy.train_per_list)


def measure(kind, policy, data: Clustered, queries: np.ndarray, truth: np.ndarray, held) -> dict:
    import faiss

    from imgidx.indexer import ann

    start = time.perf_counter()
    if held is not None:
        index = ann.build(kind, DIM, np.arange(data.n), lambda part: held[np.asarray(part)], policy=policy)
    else:
        index = _build_streaming(kind, policy, data)
    built = time.perf_counter() - start
    out = {"kind": kind, "describe": ann.describe(index), "build_s": round(built, 1)}
    for threads in sorted({1, faiss.omp_get_max_threads()}):
        faiss.omp_set_num_threads(threads)
        lat = []
        found = np.empty_like(truth)
        for i, q in enumerate(queries):
            t = time.perf_counter()
            _, found[i] = index.search(q[None], K)
            lat.append(time.perf_counter() - t)
        out[f"threads_{threads}"] = {
            "p50_ms": round(1000 * float(np.percentile(lat, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(lat, 99)), 2),
        }
    faiss.omp_set_num_threads(THREADS)
    hits = [len(set(f) & set(t)) / K for f, t in zip(found.tolist(), truth.tolist(), strict=True)]
    out.update(recall_at_10=round(float(np.mean(hits)), 4), bytes_per_vector=round(index_bytes(index) / data.n))
    del index
    return out


def _build_streaming(kind: str, policy, data: Clustered):
    """IVF over vectors too many to hold: train on the first chunks, then add chunk by chunk."""
    from imgidx.indexer import ann

    if kind != "ivf":
        raise ValueError("streaming build is for IVF only")
    index = ann._new_ivf(DIM, ann.nlist_for(data.n, policy), policy)
    need = ann_train_vectors(data.n, policy)
    sample = np.concatenate([data.chunk(i) for i in range((need + CHUNK - 1) // CHUNK)])[:need]
    index.train(sample)
    del sample
    for start, v in data.chunks():
        index.add_with_ids(v, np.arange(start, start + len(v)))
    return index


def run(opts: Options, sizes: tuple[int, ...] | None = None) -> tuple[dict, str]:
    import faiss

    global THREADS
    THREADS = faiss.omp_get_max_threads()
    sizes = sizes or ((10_000, 50_000) if opts.quick else (10_000, 100_000, 1_000_000))
    result, rows = {"dim": DIM, "k": K, "threads": THREADS, "sizes": {}}, []
    for n in sizes:
        data = Clustered(n)
        queries = data.queries(100 if opts.quick or n >= 1_000_000 else 200)
        held = np.concatenate([v for _, v in data.chunks()]) if n * DIM * 4 <= 4 << 30 else None
        truth = exact_top(data, queries)
        per = result["sizes"][n] = {}
        for name, (kind, policy) in variants().items():
            reason = None
            if held is None and not policy.fp16 or held is None and kind == "flat":
                reason = "not run: float32 needs 16 GB (24 GB machine, shared)"
            elif held is None and kind == "hnsw":
                reason = "not run: ~25 min to build (112 s at 100k) and 8.5 GB"
            elif estimate(kind, policy, n) > 0.8 * mem_available():
                reason = f"needs ~{estimate(kind, policy, n) / 2**30:.1f} GB, {mem_available() / 2**30:.1f} GB free"
            if reason:
                per[name] = {"skipped": reason}
                rows.append((f"{n:,}", name, "-", "-", "-", "-", "-", "-", reason))
                continue
            print(f"[bench] search {n:,}: {name} ...", file=sys.stderr, flush=True)
            m = per[name] = measure(kind, policy, data, queries, truth, held)
            one, many = m["threads_1"], m[f"threads_{THREADS}"]
            rows.append(
                (
                    f"{n:,}",
                    name,
                    one["p50_ms"],
                    one["p99_ms"],
                    many["p50_ms"],
                    f"{m['recall_at_10']:.3f}",
                    m["bytes_per_vector"],
                    m["build_s"],
                    "",
                )
            )
        del held
    title = f"4. search: synthetic clustered {DIM}-d unit vectors, one query at a time on 1 thread, k={K}"
    header = ["n", "kind", "p50 ms", "p99 ms", f"p50 ms {THREADS} thr", "recall@10", "bytes/vec", "build s", "note"]
    return result, table(title, header, rows)
