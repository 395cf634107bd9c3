"""Part `prep`: image preparation img/s, ours vs the seeds' recipes, on one core and on all cores (threads, as
the build's decode stage runs them)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .common import Options, photo_files, rate, table


def _seed_keras(data: bytes) -> np.ndarray:
    from keras.utils import img_to_array, load_img  # seeds 003/004: nearest resampling, no crop

    return img_to_array(load_img(io.BytesIO(data), target_size=(224, 224)))


def _seed_pil(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")  # seed 003 §9.2: full decode, centre crop, ANTIALIAS
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((224, 224), Image.Resampling.LANCZOS))


def recipes() -> dict:
    from imgidx.indexer.embedders.keras_env import import_keras
    from imgidx.indexer.images import prepare

    import_keras()
    return {
        "ours: draft + EXIF/ICC + centre crop + Lanczos": prepare,
        "ours without draft": lambda b: prepare(b, draft=False),
        "seeds: PIL full decode + crop + Lanczos": _seed_pil,
        "seeds: keras load_img(target_size=224)": _seed_keras,
    }


def run(opts: Options) -> tuple[dict, str]:
    from imgidx.indexer.flow import cores
    from imgidx.indexer.images import DRAFT_MARGIN, TARGET_SIZE

    data = [f.read_bytes() for f in photo_files(300 if opts.quick else 1000)]
    n_cores = cores()
    secs = 2 if opts.quick else 5
    result, rows = {}, []
    for name, fn in recipes().items():
        one = rate(lambda fn=fn: sum(1 for b in data if fn(b) is not None), min_seconds=secs)
        with ThreadPoolExecutor(n_cores) as pool:
            many = rate(lambda fn=fn, pool=pool: sum(1 for r in pool.map(fn, data) if r is not None), min_seconds=secs)
        result[name] = {"one_core": round(one, 1), "all_cores": round(many, 1)}
        rows.append((name, f"{one:.0f}", f"{many:.0f}", f"{many / one:.2f}x"))
    large = sum(1 for b in data if min(Image.open(io.BytesIO(b)).size) >= 2 * DRAFT_MARGIN * TARGET_SIZE)
    result["photos"], result["cores"], result["photos_draft_applies"] = len(data), n_cores, large
    title = (
        f"2. image preparation: {len(data)} shared photos (~200-1000 px; draft applies to {large}), "
        f"1 core vs {n_cores} threads (img/s)"
    )
    return result, table(title, ["recipe", "1 core", f"{n_cores} threads", "scaling"], rows)
