"""What runs inside Ray workers: the load stage (fetch + decode, CPU tasks) and the embed stage (an actor that
loads the model once). Both are made from plain, picklable settings and are the local engine's own parts: the
Loader and the two-stage flow (pipeline.py, flow.py) and compose.make_embedder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compose import make_embedder, make_fetcher
from ..config import Settings
from ..errors import ConfigError
from ..flow import two_stage
from ..images import TARGET_SIZE
from ..pipeline import DECODE_NICE, Job, Loaded, Loader
from ..records import Stamp

JOB = ("id", "source", "source_id", "url", "path")


@dataclass(frozen=True)
class Model:
    """How to build the index's embedder in another process (settings, not objects)."""

    settings: Settings
    layer: str
    weights: str  # random:SEED or a weights file's path (resolved by the driver)
    precision: str
    batch_size: int
    runtime: str  # keras | onnx (never auto: the driver chose)
    stamp: Stamp  # what the index holds: an actor that would embed anything else refuses to start


def job_rows(jobs: list[Job]) -> list[dict]:
    return [
        {"id": j.id, "source": j.source, "source_id": j.source_id, "url": j.url or "", "path": j.path or ""}
        for j in jobs
    ]


def jobs_of(batch: dict[str, np.ndarray]) -> list[Job]:
    """The jobs of a batch of job_rows (the inverse of job_rows)."""
    return [
        Job(int(i), str(s), str(sid), str(url) or None, str(path) or None)
        for i, s, sid, url, path in zip(*(batch[k] for k in JOB), strict=True)
    ]


def load_batch(batch: dict[str, np.ndarray], *, home: str, settings: Settings, workers: int) -> dict:
    """Fetch and decode one batch of jobs with the local engine's loader: downloads in `workers` threads, decoding
    in one thread at a lower priority (the task holds one CPU; the model's threads come first)."""
    jobs = jobs_of(batch)
    loader = Loader(Path(home), make_fetcher(settings, workers))
    got: list[Loaded] = list(
        two_stage(
            jobs,
            loader.fetch,
            loader.decode,
            fetch_workers=workers,
            decode_workers=1,
            window=max(1, len(jobs)),
            needs_decode=lambda g: g.error is None,
            decode_nice=DECODE_NICE,
        )
    )
    blank = np.zeros((TARGET_SIZE, TARGET_SIZE, 3), np.uint8)  # a row that failed to load: never embedded
    return {
        **{k: np.array([getattr(g.job, k) or "" for g in got], dtype=object) for k in JOB if k != "id"},
        "id": np.array([g.job.id for g in got], dtype=np.int64),
        "stored": np.array([g.path for g in got], dtype=object),
        "sha256": np.array([g.sha256 for g in got], dtype=object),
        "error": np.array([g.error or "" for g in got], dtype=object),
        "retryable": np.array([g.retryable for g in got], dtype=bool),
        "pixels": np.stack([blank if g.pixels is None else g.pixels for g in got] or [blank])[: len(got)],
    }


class Embed:
    """The embed stage: one model per actor, loaded once; pixels in, unit vectors out (rows that failed to load
    pass through with a zero vector, and the driver records their reason)."""

    def __init__(self, model: Model):
        emb = make_embedder(
            model.settings,
            model.layer,
            model.weights,
            precision=model.precision,
            batch_size=model.batch_size,
            runtime=model.runtime,
        )
        if emb.stamp != model.stamp:
            raise ConfigError(
                f"a Ray worker built the model {emb.stamp}, not the index's {model.stamp}; "
                "give every node the same weights file at the same path"
            )
        self.embedder = emb.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.flatnonzero(batch["error"] == "")
        vectors = np.zeros((len(batch["id"]), self.embedder.dim), np.float32)
        if len(ok):
            vectors[ok] = self.embedder.embed(np.ascontiguousarray(batch["pixels"][ok]))
        out = {k: v for k, v in batch.items() if k != "pixels"}  # the driver needs the vectors, not the pixels
        out["vector"] = vectors
        return out
