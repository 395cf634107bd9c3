"""Part `model`: bare model img/s (same compiled call, same batch, in-memory tensors) vs the full build pipeline
from photos on disk (folder -> read -> decode -> embed -> SQLite + FAISS), measured alternately so that the
machine's background load cancels out of the ratio as far as it can.

Also, inside each pipeline run, the fraction of its wall time the model was busy (time in embed() / wall): on a
shared machine it is the steadier sign that batches reach the model without stalls."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import OUT, Options, Others, photo_files, rate, table


def _embedder(batch_size: int | None = None):
    from imgidx.indexer.embedders import default_batch_size, default_precision
    from imgidx.indexer.embedders.keras_env import accelerator
    from imgidx.indexer.embedders.keras_runtime import KerasEmbedder as Embedder
    from imgidx.indexer.embedders.weights import resolve

    device = accelerator()
    spec = resolve("random:0", "fc2", Path("/nonexistent"), "")  # same FLOPs as the ImageNet weights
    precision = default_precision(device, runtime="keras")  # the Keras runtime's own default (no int8 there)
    emb = Embedder("fc2", spec, precision=precision, batch_size=batch_size or default_batch_size(device))
    return emb.load(), device


def _folder(files: list[Path]) -> Path:
    """A folder of links to the photos (cats/ and dogs/), so that a subset can be built like the whole."""
    root = Path(tempfile.mkdtemp(prefix="photos-", dir=OUT))
    for f in files:
        (root / f.parent.name).mkdir(exist_ok=True)
        os.symlink(f, root / f.parent.name / f.name)
    return root


class _Timed:
    """The embedder, counting the time spent in embed()."""

    def __init__(self, emb):
        self.emb, self.busy = emb, 0.0
        self.stamp, self.batch_size = emb.stamp, emb.batch_size

    def embed(self, images):
        start = time.perf_counter()
        try:
            return self.emb.embed(images)
        finally:
            self.busy += time.perf_counter() - start


def _pipeline(emb, folder: Path) -> dict:
    from imgidx.indexer.fetch import Fetcher
    from imgidx.indexer.pipeline import ingest
    from imgidx.indexer.sources.folder import FolderSource
    from imgidx.indexer.store import Store

    home = Path(tempfile.mkdtemp(prefix="home-", dir=OUT))
    try:
        with Store(home) as store:
            ids = store.add_photos(FolderSource(folder).photos())
            timed = _Timed(emb)
            report = ingest(store, ids, timed, Fetcher(workers=4), workers=4)
        return {**report.as_dict(), "model_busy": timed.busy / report.seconds}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(opts: Options) -> tuple[dict, str]:
    from imgidx.indexer.images import prepare

    from . import runtimes

    files = photo_files(96 if opts.quick else 1000)
    OUT.mkdir(parents=True, exist_ok=True)
    from imgidx.indexer.embedders.keras_env import accelerator

    device = accelerator()
    bs = (64 if device == "cpu" else 128) // (4 if opts.quick else 1)
    x = np.stack([prepare(f.read_bytes()) for f in files[:bs]])
    gflops = runtimes.sgemm_gflops()
    limit = gflops / runtimes.GFLOP_PER_IMAGE
    from imgidx.indexer.embedders.onnx_runtime import CALIBRATION_PHOTOS

    embs, variants = runtimes.measure(
        x, rounds=2 if opts.quick else 3, min_seconds=5 if opts.quick else 12, calibration=CALIBRATION_PHOTOS
    )
    verdicts = gate_verdicts()
    for name, v in variants.items():
        v["gate"] = verdicts.get(name.split()[1], "not run here (make quality)")
    best = max(variants, key=lambda k: variants[k]["median"])
    best_fp32 = max((k for k in variants if k.endswith("fp32")), key=lambda k: variants[k]["median"])
    for v in variants.values():
        v["of_sgemm_limit"] = round(v["median"] / limit, 3)
    today = variants["keras fp32"]["median"]
    emb = embs[best]
    default = _default_variant(bs, OUT / f"runtimes-home-cal{CALIBRATION_PHOTOS}")
    embs_all = {k: embs[k] for k in dict.fromkeys(("keras fp32", default))}  # today's build and the default one
    for name in [k for k in embs if k not in (best, "keras fp32", default)]:
        del embs[name]

    others: list[float] = []

    def bare() -> float:
        with Others() as o:
            got = rate(lambda: len(emb.embed(x)), min_seconds=5 if opts.quick else 12)
        others.append(o.cores)
        return got

    folder = _folder(files)
    try:
        bares, pipes, reports = [bare()], [], []
        for _ in range(1 if opts.quick else 3):
            with Others() as o:
                reports.append(_pipeline(emb, folder))
            others.append(o.cores)
            pipes.append(reports[-1]["photos_per_second"])
            bares.append(bare())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratios = [p / statistics.mean(bares[i : i + 2]) for i, p in enumerate(pipes)]
    builds = _builds_vs_today(embs_all, default, files[: 96 if opts.quick else 384], 1 if opts.quick else 2)
    result = {
        "device": device,
        "layer": "fc2",
        "weights": "random:0 (same FLOPs as imagenet)",
        "batch_size": bs,
        "sgemm_gflops": round(gflops, 1),
        "sgemm_shape": runtimes.SGEMM_SHAPE,
        "sgemm_limit_img_per_s": round(limit, 2),
        "runtimes": variants,
        "best": best,
        "best_fp32": best_fp32,
        "best_vs_keras_fp32": round(variants[best]["median"] / today, 2),
        "precision": emb.precision,
        "runtime": best.split()[0],
        "photos": len(files),
        "bare_img_per_s": [round(b, 2) for b in bares],
        "pipeline_img_per_s": pipes,
        "pipeline_vs_keras_fp32_bare": round(statistics.median(pipes) / today, 2),
        "ratios": [round(r, 3) for r in ratios],
        "ratio": round(statistics.median(ratios), 3),
        "model_busy": [round(r["model_busy"], 3) for r in reports],
        "other_processes_cores": {
            "bare": [round(c, 2) for c in others[:1] + others[2::2]],
            "pipeline": [round(c, 2) for c in others[1::2]],
        },
        "goal": 0.95 if device == "gpu" else 0.85,
        "builds_vs_today": builds,
        "default_build_vs_best_bare": round(
            statistics.median(builds["photos_per_second"][default]) / variants[best]["median"], 2
        ),
        "skipped_photos": reports[-1]["skipped"],
        "reused_photos": reports[-1]["reused"],
    }
    if device == "gpu":  # the batch size question only matters there
        result["bare_by_batch"] = {b: round(rate(_sweep(b, x), min_seconds=5), 1) for b in (64, 128, 256)}
    rows = [
        (
            f"{name} (bare)",
            " ".join(f"{r:.2f}" for r in v["img_per_s"]),
            f"{v['of_sgemm_limit']:.2f}",
            " ".join(f"{c:.2f}" for c in v["others"]),
            v["gate"],
        )
        for name, v in variants.items()
    ]
    rows.append((f"sgemm limit ({gflops:.0f} GFLOP/s / {runtimes.GFLOP_PER_IMAGE})", f"{limit:.2f}", "1", "", ""))
    bare_others, pipe_others = others[:1] + others[2::2], others[1::2]
    rows += [(f"{best}: bare, again", f"{b:.2f}", "", f"{c:.2f}", "") for b, c in zip(bares, bare_others, strict=True)]
    rows += [
        (f"{best}: full build pipeline from disk", f"{p:.2f}", "", f"{c:.2f}", "")
        for p, c in zip(pipes, pipe_others, strict=True)
    ]
    rows.append(("ratio pipeline / bare (median)", f"{result['ratio']:.3f} (goal >= {result['goal']})", "", "", ""))
    rows.append(("pipeline / keras fp32 bare", f"{result['pipeline_vs_keras_fp32_bare']:.2f}x", "", "", ""))
    rows.append(("model busy in the pipeline", " ".join(f"{b:.3f}" for b in result["model_busy"]), "", "", ""))
    for name, b in builds["photos_per_second"].items():
        label = "today's build (keras fp32)" if name == "keras fp32" else f"default build ({name})"
        rows.append((f"{label}, {builds['photos']} photos", " ".join(f"{r:.2f}" for r in b), "", "", ""))
    rows.append(("default build / today's build (median)", f"{builds['ratio']:.2f}x", "", "", ""))
    rows.append((f"default build / best bare ({best})", f"{result['default_build_vs_best_bare']:.2f}x", "", "", ""))
    title = (
        f"1. model: runtimes x precisions vs the sgemm limit, then the pipeline with the fastest: {device}, fc2, "
        f"batch {bs}, {len(files)} photos"
    )
    header = ["what", "img/s", "of limit", "cores used by other processes", "quality gate (vs fp32)"]
    return result, table(title, header, rows)


def gate_verdicts() -> dict[str, str]:
    """precision -> the quality gate's verdict on this machine (bench/precision_gate.py's last report), for the
    int8 recipe in use and bf16; fp32 is the reference."""
    import json

    verdicts = {"fp32": "reference"}
    try:
        report = json.loads((OUT / "precision_gate.json").read_text())
    except (OSError, ValueError):
        return verdicts
    for name, v in report.get("variants", {}).items():
        precision, kind = name.split(" ", 1)
        if kind in ("default", "keras"):
            worst = v.get("worst_delta")
            verdicts[precision] = f"{'pass' if v.get('passes') else 'FAIL'} (worst outcome delta {worst})"
    return verdicts


def _default_variant(batch_size: int, home: Path) -> str:
    """ "runtime precision" of what a default build runs here: the device's default precision for fc2 on the
    runtime `--runtime auto` picks (measured once per machine and remembered, embedders/choice.py)."""
    from dataclasses import replace

    from imgidx.indexer.compose import make_embedder
    from imgidx.indexer.config import Settings

    settings = replace(Settings.from_env(), home=home)  # the exported graph: the one runtimes.measure made
    chosen = make_embedder(settings, "fc2", "random:0", batch_size=batch_size, runtime="auto")
    return f"{chosen.runtime} {chosen.precision}"


def _builds_vs_today(embs: dict, default: str, files: list[Path], rounds: int) -> dict:
    """The build pipeline from disk with today's model call (Keras/TensorFlow fp32, what imgidx ran before ONNX
    Runtime) and with the default one (the default precision on the faster runtime that runs it, as measured
    above: what `--runtime auto` picks), alternating, `rounds` each: photos/s of each and the ratio of the medians."""
    folder = _folder(files)
    got: dict[str, list[float]] = {name: [] for name in embs}
    others: dict[str, list[float]] = {name: [] for name in embs}
    try:
        for _ in range(rounds):
            for name, emb in embs.items():
                with Others() as o:
                    got[name].append(round(_pipeline(emb, folder)["photos_per_second"], 2))
                others[name].append(round(o.cores, 2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    med = {name: statistics.median(v) for name, v in got.items()}
    return {
        "photos": len(files),
        "photos_per_second": got,
        "other_processes_cores": others,
        "ratio": round(med[default] / med["keras fp32"], 2),
        "default": default,
    }


def _sweep(batch_size: int, x: np.ndarray):
    emb, _ = _embedder(batch_size)
    xb = np.resize(x, (batch_size, *x.shape[1:]))
    emb.embed(xb)
    return lambda: len(emb.embed(xb))
