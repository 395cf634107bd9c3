"""Part `coldstart`: wall time of `imgidx info`, `imgidx similar --id` and `imgidx similar PHOTO` in a fresh
interpreter (median of 3), on an index of 2,000 fc2 vectors. info and similar --id need no model; similar PHOTO
imports TensorFlow, builds VGG16 and embeds the photo."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import OUT, ROOT, Options, photo_files, table


def _home() -> tuple[Path, Path]:
    from imgidx.indexer.records import Photo, Stamp
    from imgidx.indexer.store import Store

    home = Path(tempfile.mkdtemp(prefix="cold-", dir=OUT))
    photo = photo_files(1)[0]
    rng = np.random.default_rng(0)
    with Store(home) as s:
        s.ensure_stamp(Stamp(model="vgg16", layer="fc2", weights="random:0", dim=4096, precision="bf16"))
        ids = s.add_photos([Photo(source="folder", source_id=f"{i}.jpg", collection="c") for i in range(2000)])
        v = rng.standard_normal((2000, 4096), dtype=np.float32)
        s.add_vectors([(i, "", f"s{i}") for i in ids], v / np.linalg.norm(v, axis=1, keepdims=True))
        s.save_index()
    return home, photo


def _wall(home: Path, *args: str) -> float:
    env = {**os.environ, "IMGIDX_HOME": str(home), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgidx", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def run(opts: Options) -> tuple[dict, str]:
    OUT.mkdir(parents=True, exist_ok=True)
    home, photo = _home()
    try:
        cases = {
            "python -c pass (interpreter alone)": None,
            "imgidx info": ("info",),
            "imgidx similar --id 1": ("similar", "--id", "1"),
            "imgidx similar PHOTO (TensorFlow + VGG16 fc2, bf16)": ("similar", str(photo)),
        }
        result, rows = {}, []
        for name, args in cases.items():
            runs = []
            for _ in range(3):
                if args is None:
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-c", "pass"], check=True)
                    runs.append(time.perf_counter() - start)
                else:
                    runs.append(_wall(home, *args))
            result[name] = {"median_s": round(statistics.median(runs), 2), "runs_s": [round(r, 2) for r in runs]}
            rows.append((name, f"{statistics.median(runs):.2f}", " ".join(f"{r:.2f}" for r in runs)))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return result, table("5. cold start: wall time in a fresh interpreter (s)", ["command", "median", "runs"], rows)
