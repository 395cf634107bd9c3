"""`imgidx demo`: an offline end-to-end run on photos it generates (no Flickr key, no downloads needed).

It draws three families of pictures (stripes, rings, checks) with random colours and noise, indexes them with
`imgidx build --from-dir`, then asks `imgidx similar` for the neighbours of a fresh picture of each family.
It uses the ImageNet weights when they are in the Keras cache, else explicitly random weights (and says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FAMILIES = ("stripes", "rings", "checks")


def draw(family: str, seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(5, 9)
    if family == "stripes":
        angle = rng.uniform(0, np.pi)
        base = np.sin((x * np.cos(angle) + y * np.sin(angle)) / period) > 0
    elif family == "rings":
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        base = np.sin(np.hypot(x - cx, y - cy) / period) > 0
    else:
        cell = int(rng.integers(16, 40))
        base = ((x // cell + y // cell) % 2).astype(bool)
    colour = rng.uniform(30, 225, size=3)
    arr = np.where(base[..., None], colour, 255 - colour) + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def generate(root: Path, per_family: int = 12) -> list[Path]:
    """Writes root/<family>/<family>_<i>.jpg and returns one held-out query per family."""
    for f_i, family in enumerate(FAMILIES):
        (root / family).mkdir(parents=True, exist_ok=True)
        for i in range(per_family):
            draw(family, 1000 * f_i + i).save(root / family / f"{family}_{i:02d}.jpg", quality=90)
    queries = root.parent / "demo-queries"
    queries.mkdir(parents=True, exist_ok=True)
    out = []
    for f_i, family in enumerate(FAMILIES):
        path = queries / f"new_{family}.jpg"
        draw(family, 1000 * f_i + 999).save(path, quality=90)
        out.append(path)
    return out
