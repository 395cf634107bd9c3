"""Duplicates quality (the `duplicates` part of `make quality`) on the 2,000 shared cat/dog photos, real conv weights.

For 100 of the photos (50 cats, 50 dogs, seeded) it makes edited copies, the way reposts and re-uploads look:
  jpeg40     re-encoded at JPEG quality 40
  resize60   downscaled to 60 % per side
  crop85     cropped to 85 % per side (off-centre) and resized back
  watermark  a small semi-transparent text overlay in a corner
  colour     saturation +30 %, brightness +8 %   (the issue's "colour tweak"; reported on its own line)
  flip       horizontal mirror: counted as a *different* picture (see search/duplicates.py), reported separately
Every file (originals and variants) is embedded once with block5_pool fp32 and cached in bench/out/embed-cache
keyed by the sha256 of its bytes, so later runs embed nothing. Then `find_duplicates` runs at the default
threshold and we report, for the `near` groups:
  precision  share of grouped pairs that are the same picture (an original and its own edits);
  recall     share of the original-edit pairs (and edit-edit pairs) that end up in one group;
  same-breed pairs grouped that are different pictures (the "burst shot" failure).
Plus time and peak memory of find_duplicates over 100,000 synthetic vectors.

Usage: python -m bench.duplicates [--embed-only] [--skip-scale] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from .common import OUT, labels_of, need_weights, photo_files

CACHE = OUT / "embed-cache" / "vgg16-block5_pool-fp32"
# Other benches keep the same layout (one .npy per file sha256, block5_pool fp32 of the shared weights); vectors
# already there are read, not embedded again (IMGIDX_EMBED_CACHES: extra folders, ":"-separated).
ALSO = [Path(p) for p in os.environ.get("IMGIDX_EMBED_CACHES", "").split(":") if p]
EDITS = ("jpeg40", "resize60", "crop85", "watermark")  # the variants: all must group with the original
EXTRA = ("colour", "flip")
SAMPLE = 100
SEED = 11


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variant(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if kind == "jpeg40":
        return _jpeg(img, 40)
    if kind == "resize60":
        return _jpeg(img.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.LANCZOS))
    if kind == "crop85":
        cw, ch = round(w * 0.85), round(h * 0.85)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return _jpeg(img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.LANCZOS))
    if kind == "watermark":
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        size = max(10, h // 14)
        font = ImageFont.load_default(size=size)
        text = "© photo-site.example"
        box = draw.textbbox((0, 0), text, font=font)
        tw, th = box[2] - box[0], box[3] - box[1]
        corner = int(rng.integers(0, 4))
        x = 8 if corner % 2 == 0 else w - tw - 8
        y = 8 if corner < 2 else h - th - 12
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 150), stroke_width=1, stroke_fill=(0, 0, 0, 110))
        return _jpeg(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))
    if kind == "colour":
        return _jpeg(ImageEnhance.Brightness(ImageEnhance.Color(img).enhance(1.3)).enhance(1.08))
    if kind == "flip":
        return _jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    raise ValueError(kind)


def dataset() -> tuple[list[bytes], list[str], np.ndarray, np.ndarray, list[str]]:
    """(file bytes, names, label per file, source index per file (the original it came from), kind per file)."""
    files = photo_files()
    labels = labels_of(files)
    rng = np.random.default_rng(SEED)
    picked = sorted(
        rng.choice(np.flatnonzero(labels == 0), SAMPLE // 2, replace=False).tolist()
        + rng.choice(np.flatnonzero(labels == 1), SAMPLE // 2, replace=False).tolist()
    )
    blobs = [f.read_bytes() for f in files]
    names = [f"{f.parent.name}/{f.name}" for f in files]
    label, source, kinds = list(labels), list(range(len(files))), ["original"] * len(files)
    for i in picked:
        for kind in EDITS + EXTRA:
            blobs.append(variant(blobs[i], kind, rng))
            names.append(f"{names[i]}#{kind}")
            label.append(labels[i])
            source.append(i)
            kinds.append(kind)
    return blobs, names, np.array(label), np.array(source), kinds


def embed_cached(blobs: list[bytes], *, first: list[int] = (), batch: int = 16, log=print) -> np.ndarray:
    """Unit vectors of each file, embedding only those not yet in CACHE (one .npy per sha256, written atomically);
    the files `first` lists are embedded first."""
    CACHE.mkdir(parents=True, exist_ok=True)
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    order = list(dict.fromkeys([*first, *range(len(blobs))]))

    def cached(i: int) -> Path | None:
        return next((p for d in (CACHE, *ALSO) if (p := d / f"{shas[i]}.npy").is_file()), None)

    todo = [i for i in order if cached(i) is None]
    if todo:
        from imgidx.indexer.embed import Embedder
        from imgidx.indexer.images import prepare
        from imgidx.indexer.weights import resolve

        spec = resolve(str(need_weights()), "block5_pool", need_weights().parent, "")
        emb = Embedder("block5_pool", spec, precision="fp32", batch_size=batch).load()
        start = time.monotonic()
        done = 0
        for k in range(0, len(todo), batch):
            chunk = [i for i in todo[k : k + batch] if cached(i) is None]  # another bench may have done some
            if not chunk:
                continue
            vecs = emb.embed(np.stack([prepare(blobs[i]) for i in chunk]))
            for i, v in zip(chunk, vecs, strict=True):
                tmp = CACHE / f".{shas[i]}.{os.getpid()}.tmp.npy"
                np.save(tmp, v)
                os.replace(tmp, CACHE / f"{shas[i]}.npy")
            done += len(chunk)
            log(f"embedded {done} (of at most {len(todo)}) ({done / (time.monotonic() - start):.1f} img/s)")
    missing = [i for i in range(len(blobs)) if cached(i) is None]
    if missing:
        raise SystemExit(f"{len(missing)} files have no cached vector")
    return np.stack([np.load(cached(i)) for i in range(len(blobs))]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true", help="fill the embedding cache and stop")
    parser.add_argument("--skip-scale", action="store_true", help="skip the 100,000-vector time/memory part")
    parser.add_argument("--json", type=Path, default=OUT / "duplicates.json")
    args = parser.parse_args(argv)
    blobs, names, label, source, kinds = dataset()
    # the edits first (their originals are being embedded by the clean bench from the other end of the
    # list), then the originals from the start, then the extra edits
    first = [i for i in range(len(kinds)) if kinds[i] in EDITS]
    vectors = embed_cached(blobs, first=first, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.embed_only:
        return 0
    report = evaluate(blobs, names, label, source, kinds, vectors)
    if not args.skip_scale:
        report["scale_100k"] = scale(100_000)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def evaluate(blobs, names, label, source, kinds, vectors) -> dict:  # filled in below
    raise NotImplementedError


def scale(n: int) -> dict:
    raise NotImplementedError


if __name__ == "__main__":
    raise SystemExit(main())
