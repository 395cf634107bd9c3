"""engine="ray": fetch → decode → embed as a Ray Data pipeline; the results stream back to this process, the one
that owns the store, and go through the local engine's commit step (pipeline.Committer) batch by batch.

Load: `map_batches` CPU tasks (the local Loader: downloads in threads, one decode thread each). Embed: a pool of
actors (ray_stages.Embed), each loading the model once: one per GPU with `num_gpus=1` where the cluster has GPUs,
else one per node. Photos the store already has never reach Ray (pipeline.plan). Downloads are written into the
data home by the workers, so on a cluster of several machines the data home (and a folder being indexed) must be
on a filesystem every node mounts at the same path; a file the driver cannot see stops the build with that advice.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import layout
from ..config import Settings
from ..embedders import Embedder, default_batch_size
from ..errors import ImgidxError, StoreError
from ..pipeline import Committer, IngestReport, Job, Loaded, plan
from ..store import Store
from .ray_cluster import connected, import_ray, resources
from .ray_stages import Embed, Model, job_rows, jobs_of, load_batch

LOAD_BATCH = 16  # photos per load task: enough to keep its download threads busy, small enough to spread out
RETRIES = 3  # a lost task or actor (a killed worker, a lost node) is retried this often before the build stops


def ingest_ray(
    store: Store,
    photo_ids: Sequence[int],
    embedder: Embedder,
    settings: Settings,
    *,
    weights: str,
    batch_size: int | None = None,
    workers: int = 16,
    retry_failed: bool = False,
    save_every: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
    address: str | None = None,
) -> IngestReport:
    """ingest() on Ray. embedder: the driver's (unloaded) embedder: its stamp, precision and runtime are what the
    actors build; batch_size None: the device's default (the actors' device: a GPU where the cluster has one)."""
    ray = import_ray()
    start = time.monotonic()
    store.ensure_stamp(embedder.stamp)
    report, jobs = plan(store, photo_ids, retry_failed=retry_failed)
    home = Path(store.home).resolve()
    if jobs:
        with connected(ray, address):
            gpus, nodes = resources(ray)
            model = Model(
                # workers need no secret, and their working folder is not ours: the home as an absolute path
                settings=replace(settings, home=home, flickr_key=None, flickr_secret=None, token=None),
                layer=embedder.layer,
                weights=weights,
                precision=embedder.precision,
                batch_size=batch_size or default_batch_size("gpu" if gpus else "cpu"),
                runtime=getattr(embedder, "runtime", "keras"),
                stamp=embedder.stamp,
            )
            committer = Committer(
                store, report, _carried, model.batch_size, save_every=save_every, on_progress=on_progress
            )
            for item in _stream(ray, jobs, model, home, workers, gpus, nodes):
                committer.add(item)
            committer.finish()
    else:
        store.save_index()
    report.seconds = time.monotonic() - start
    return report


def _carried(items: list[Loaded]) -> np.ndarray:
    """The commit step's `embed`: the actors already did it."""
    return np.stack([b.vector for b in items])


def _stream(ray, jobs: list[Job], model: Model, home: Path, workers: int, gpus: int, nodes: int) -> Iterator[Loaded]:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start, logging.getLogger("ray.data").level
    ctx.enable_progress_bars = False  # the caller reports progress, as in a local build
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its start/finish notes would interleave with progress
    seen: set[int] = set()
    try:
        # prefetch_batches=0: each embedded batch reaches the commit step as its actor call ends (measured: with
        # Ray Data's default of 1, a batch arrived only when the next one was done: commits and progress a batch late)
        for batch in _dataset(ray, jobs, model, home, workers, gpus, nodes).iter_batches(
            batch_size=None, batch_format="numpy", prefetch_batches=0
        ):
            for item in _items(batch, home):
                if item.job.id not in seen:  # a retried task may send rows again: each photo is committed once
                    seen.add(item.job.id)
                    yield item
    except Exception as e:  # a library error raised in a worker (a full disk, a missing weights file): its own line
        cause = _imgidx_cause(e)
        if cause is not None:
            raise cause from None
        raise
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved[:2]
        logging.getLogger("ray.data").setLevel(saved[2])


def _dataset(ray, jobs: list[Job], model: Model, home: Path, workers: int, gpus: int, nodes: int):
    """Load tasks → embed actor pool, lazily (nothing runs before the caller iterates)."""
    ds = ray.data.from_items(job_rows(jobs), override_num_blocks=max(1, math.ceil(len(jobs) / LOAD_BATCH)))
    with warnings.catch_warnings():
        # retries and restarts are passed the one way every Ray since 2.9 takes them (newer ones warn it will go)
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            load_batch,
            fn_kwargs={"home": str(home), "settings": model.settings, "workers": workers},
            batch_size=LOAD_BATCH,
            batch_format="numpy",
            num_cpus=1,
            max_retries=RETRIES,
        )
        return ds.map_batches(
            Embed,
            fn_constructor_kwargs={"model": model},
            batch_size=model.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=gpus or nodes),
            num_gpus=1 if gpus else 0,
            num_cpus=1,
            # Ray Data restarts actors forever by default: a photo that kills the model every time would never end
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )


def _items(batch: dict[str, np.ndarray], home: Path) -> Iterator[Loaded]:
    for i, job in enumerate(jobs_of(batch)):
        error = str(batch["error"][i]) or None
        stored = str(batch["stored"][i])
        if error is None and job.url is not None and not layout.local_file(home, stored).is_file():
            raise StoreError(
                f"a Ray worker saved photo {job.source_id} as {stored}, which is not under {home} here: on a cluster "
                "the data home must be on a filesystem every node mounts at the same path"
            )
        yield Loaded(
            job,
            path=stored,
            sha256=str(batch["sha256"][i]),
            error=error,
            retryable=bool(batch["retryable"][i]),
            vector=None if error else np.asarray(batch["vector"][i], dtype=np.float32),
        )


def _imgidx_cause(e: BaseException) -> ImgidxError | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, ImgidxError):
            return x
        stack += [getattr(x, "cause", None), x.__cause__, x.__context__]
    return None
