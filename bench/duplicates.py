"""Duplicates quality (the `duplicates` part of `make quality`) on the 2,000 shared cat/dog photos, real conv weights.

For 100 of the photos (50 cats, 50 dogs, seeded) it makes edited copies, the way reposts and re-uploads look
(the edits of issue 22's check, then two more stamps):
  jpeg30      re-encoded at JPEG quality 30
  half        downscaled to 50 % per side
  crop80      cropped to 80 % per side (off-centre), kept at that size
  brightness  brightness +25 %
  textbox     an opaque box with text stamped in a corner (a repost site's credit line)
  logo        a semi-transparent logo (a ring and a word) in a corner; reported on its own line
  border      a 6 % white frame around the picture, resized back; reported on its own line
  flip        horizontal mirror: counted as a *different* picture (see search/duplicates.py), reported separately
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
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from . import embed_cache
from .common import OUT, labels_of, need_weights, photo_files

CACHE = embed_cache.CACHE / "vgg16-block5_pool-fp32"  # the same folder bench/embed_cache.py fills
# Other benches keep the same layout (one .npy per file sha256, block5_pool fp32 of the shared weights); vectors
# already there are read, not embedded again (IMGIDX_EMBED_CACHES: extra folders, ":"-separated).
ALSO = [Path(p) for p in os.environ.get("IMGIDX_EMBED_CACHES", "").split(":") if p]
EDITS = ("jpeg30", "half", "crop80", "brightness", "textbox")  # issue 22's variants: all must group with the original
EXTRA = ("logo", "border", "flip")
SAMPLE = 100
SEED = 11


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variant(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if kind == "jpeg30":
        return _jpeg(img, 30)
    if kind == "half":
        return _jpeg(img.resize((round(w * 0.5), round(h * 0.5)), Image.Resampling.LANCZOS))
    if kind == "crop80":
        cw, ch = round(w * 0.8), round(h * 0.8)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return _jpeg(img.crop((x, y, x + cw, y + ch)))
    if kind == "brightness":
        return _jpeg(ImageEnhance.Brightness(img).enhance(1.25))
    if kind in ("textbox", "logo"):
        return _jpeg(stamp(img, kind, int(rng.integers(0, 4))))
    if kind == "border":
        pad = round(0.06 * max(w, h))
        framed = Image.new("RGB", (w + 2 * pad, h + 2 * pad), (255, 255, 255))
        framed.paste(img, (pad, pad))
        return _jpeg(framed.resize((w, h), Image.Resampling.LANCZOS))
    if kind == "flip":
        return _jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    raise ValueError(kind)


def stamp(img: Image.Image, kind: str, corner: int) -> Image.Image:
    """`textbox`: an opaque dark box with white text (~40 % of the width, ~9 % of the height) in a corner;
    `logo`: a half-transparent ring and word (~1/5 of the width) in a corner."""
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(10, h // 16)
    font = ImageFont.load_default(size=size)
    text = "reposted by photo-site.example" if kind == "textbox" else "LOGO"
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    bw, bh = (tw + 2 * size // 2, th + size) if kind == "textbox" else (tw + th + size, th + size)
    x = 6 if corner % 2 == 0 else w - bw - 6
    y = 6 if corner < 2 else h - bh - 6
    if kind == "textbox":
        draw.rectangle((x, y, x + bw, y + bh), fill=(20, 20, 20, 255))
        draw.text((x + size // 2, y + size // 2 - box[1]), text, font=font, fill=(255, 255, 255, 255))
    else:
        draw.ellipse((x, y, x + bh, y + bh), outline=(255, 255, 255, 170), width=max(2, size // 5))
        draw.text((x + bh + size // 2, y + size // 2 - box[1]), text, font=font, fill=(255, 255, 255, 170))
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


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


def embed_cached(
    blobs: list[bytes], *, first: list[int] = (), batch: int = 16, log=print, embed: bool = True
) -> np.ndarray:
    """Unit vectors of each file, embedding only those not yet in CACHE (one .npy per sha256, written atomically);
    the files `first` lists are embedded first. embed=False: NaN rows for the files not cached yet."""
    CACHE.mkdir(parents=True, exist_ok=True)
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    order = list(dict.fromkeys([*first, *range(len(blobs))]))

    def cached(i: int) -> Path | None:
        return next((p for d in (CACHE, *ALSO) if (p := d / f"{shas[i]}.npy").is_file()), None)

    todo = [i for i in order if cached(i) is None]
    if todo and not embed:
        out = np.full((len(blobs), 512), np.nan, np.float32)
        for i in range(len(blobs)):
            if (p := cached(i)) is not None:
                out[i] = np.load(p)
        return out
    if todo:
        from imgidx.indexer.images import prepare

        emb = embed_cache.embedder_for("block5_pool", need_weights(), "fp32").load()
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
    parser.add_argument("--cached-only", action="store_true", help="embed nothing: score the files cached so far")
    parser.add_argument("--json", type=Path, default=OUT / "duplicates.json")
    args = parser.parse_args(argv)
    blobs, names, label, source, kinds = dataset()
    # the edits first (their originals are being embedded by the clean bench from the other end of the
    # list), then the originals from the start, then the extra edits
    first = [i for i in range(len(kinds)) if kinds[i] in EDITS]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    vectors = embed_cached(blobs, first=first, log=log, embed=not args.cached_only)
    if args.embed_only:
        return 0
    if args.cached_only:  # the files with a vector, and only edits whose original has one
        have = ~np.isnan(vectors[:, 0])
        keep = [i for i in range(len(blobs)) if have[i] and have[source[i]]]
        new = {old: k for k, old in enumerate(keep)}
        blobs, names = [blobs[i] for i in keep], [names[i] for i in keep]
        label, kinds, vectors = label[keep], [kinds[i] for i in keep], vectors[keep]
        source = np.array([new[int(source[i])] for i in keep])
        log(f"scoring the {len(keep)} cached files")
    report = evaluate(blobs, names, label, source, kinds, vectors)
    if not args.skip_scale:
        report["scale_100k"] = scale(100_000)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def _pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for g in groups for a, b in combinations(sorted(g), 2)}


def _score(idx: np.ndarray, vectors, source, kinds, label, facts, threshold, blobs=None) -> dict:
    """find_duplicates over the files `idx`, scored against "same source photo"; with `blobs`, the pixel check
    (search/pixels.py) judges the pairs between the cut and 3x the cut, as `imgidx duplicates` does."""
    from imgidx.search.duplicates import find_duplicates
    from imgidx.search.pixels import verifier

    verify = None if blobs is None else verifier(lambda row: blobs[idx[row]])
    t = time.perf_counter()
    result = find_duplicates(vectors[idx], [facts[i] for i in idx], threshold=threshold, model=MODEL, verify=verify)
    seconds = time.perf_counter() - t
    groups = [list(g.ids) for g in result.groups]  # facts ids are the file indices
    near = [g for g, grp in zip(groups, result.groups, strict=True) if grp.kind == "near"]
    predicted = _pairs(near)
    truth_groups: dict[int, list[int]] = {}
    for i in idx:
        truth_groups.setdefault(int(source[i]), []).append(int(i))
    truth = _pairs([g for g in truth_groups.values() if len(g) > 1])
    hit = predicted & truth
    wrong = sorted(predicted - truth)
    distinct = {(int(min(source[a], source[b])), int(max(source[a], source[b]))) for a, b in wrong}
    per_kind = {}
    for kind in sorted({kinds[i] for i in idx} - {"original"}):
        edits = [i for i in idx if kinds[i] == kind]
        joined = sum(1 for i in edits if (min(i, source[i]), max(i, source[i])) in predicted)
        per_kind[kind] = {"edits": len(edits), "grouped_with_original": joined, "recall": round(joined / len(edits), 4)}
    return {
        "files": len(idx),
        "threshold": round(result.threshold, 4),
        "rule": result.rule,
        "pixel_check_up_to": result.verified_up_to,
        "pixel_checked_pairs": result.verified_pairs,
        "pixel_confirmed_pairs": result.confirmed_pairs,
        "seconds": round(seconds, 3),
        "groups": len(result.groups),
        "exact_groups": sum(1 for g in result.groups if g.kind == "exact"),
        "near_groups": len(near),
        "pairs_true": len(truth),
        "pairs_predicted": len(predicted),
        "precision": round(len(hit) / max(1, len(predicted)), 4),
        "recall": round(len(hit) / max(1, len(truth)), 4),
        "per_edit": per_kind,
        "distinct_photo_pairs_grouped": len(distinct),
        "distinct_pairs_same_label": sum(1 for a, b in distinct if label[a] == label[b]),
        "distinct_pairs": [[a, b] for a, b in sorted(distinct)],
    }


MODEL = ("vgg16", "block5_pool")


def distances(vectors, source, kinds, idx_originals) -> dict:
    """The numbers the calibrated cut stands on: how far each edit is from its original, and how close
    distinct originals get (nearest other original, all 2,000)."""
    out = {}
    for kind in EDITS + EXTRA:
        rows = [i for i in range(len(kinds)) if kinds[i] == kind]
        if rows:
            d = 1 - np.sum(vectors[rows] * vectors[source[rows]], axis=1)
            out[kind] = {q: round(float(np.percentile(d, p)), 4) for q, p in (("p50", 50), ("p95", 95), ("max", 100))}
    v = vectors[idx_originals]
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    nn = 1 - sims.max(axis=1)
    out["nearest_other_original"] = {
        "min": round(float(nn.min()), 4),
        "p01": round(float(np.percentile(nn, 1)), 4),
        "p05": round(float(np.percentile(nn, 5)), 4),
        "median": round(float(np.median(nn)), 4),
        "below_0.05": int((nn < 0.05).sum()),
        "below_0.10": int((nn < 0.10).sum()),
    }
    return out


def evaluate(blobs, names, label, source, kinds, vectors) -> dict:
    from imgidx.search.duplicates import PhotoFacts

    facts = [PhotoFacts(id=i, sha256=hashlib.sha256(b).hexdigest(), size_bytes=len(b)) for i, b in enumerate(blobs)]
    kinds_arr = np.array(kinds)
    originals = np.flatnonzero(kinds_arr == "original")
    main = np.flatnonzero(np.isin(kinds_arr, ("original", *EDITS)))
    with_stamps = np.flatnonzero(np.isin(kinds_arr, ("original", *EDITS, "logo", "border")))
    with_flip = np.flatnonzero(np.isin(kinds_arr, ("original", "flip")))
    report = {
        "photos": {
            "originals": len(originals),
            "edited_sources": SAMPLE,
            "edits": dict(Counter(kinds_arr[kinds_arr != "original"])),
        },
        "distances": distances(vectors, source, kinds, originals),
        "default": _score(main, vectors, source, kinds, label, facts, "auto", blobs),
        "vectors_only": _score(main, vectors, source, kinds, label, facts, "auto"),
        "with_logo_and_border": _score(with_stamps, vectors, source, kinds, label, facts, "auto", blobs),
        "flips_only": _score(with_flip, vectors, source, kinds, label, facts, "auto", blobs),
    }
    # the same photos with the data-driven rule (as for weights without a calibrated cut)
    from imgidx.search.duplicates import find_duplicates

    dd = find_duplicates(vectors[main], [facts[i] for i in main], model=None)
    report["data_driven_rule"] = {"threshold": round(dd.threshold, 4), "rule": dd.rule, "nn_median": dd.nn_median}
    scored = _score(main, vectors, source, kinds, label, facts, dd.threshold, blobs)
    report["data_driven_rule"].update({k: v for k, v in scored.items() if k != "rule"})
    wrong = [pair for part in ("default", "vectors_only") for pair in report[part]["distinct_pairs"]]
    report["files"] = {str(i): names[i] for pair in wrong for i in pair}
    return report


def scale(n: int, dim: int = 512, copies: int = 1000, seed: int = 0) -> dict:
    """find_duplicates over n synthetic unit vectors (pooled-ReLU-like: non-negative) with `copies` planted near
    copies, in a fresh subprocess so its peak RSS is its own."""
    import subprocess

    code = f"""
import json, resource, time, numpy as np
from imgidx.search.duplicates import PhotoFacts, find_duplicates
rng = np.random.default_rng({seed})
v = np.empty(({n}, {dim}), np.float32)
for a in range(0, {n}, 10_000):  # in slices: the peak before the call is the vectors themselves
    v[a : a + 10_000] = np.abs(rng.standard_normal((min(10_000, {n} - a), {dim}), dtype=np.float32))
v /= np.linalg.norm(v, axis=1, keepdims=True)
src = rng.choice({n - copies}, {copies}, replace=False)
v[{n - copies}:] = v[src] + rng.standard_normal(({copies}, {dim}), dtype=np.float32) * 0.012
v[{n - copies}:] /= np.linalg.norm(v[{n - copies}:], axis=1, keepdims=True)
facts = [PhotoFacts(id=i) for i in range({n})]
before = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
r = find_duplicates(v, facts, threshold="auto", model=("vgg16", "block5_pool"))
seconds = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF)
found = {{tuple(sorted(g.ids)) for g in r.groups}}
planted = {{tuple(sorted((int(s), {n - copies} + k))) for k, s in enumerate(src)}}
print(json.dumps(dict(vectors={n}, dim={dim}, planted=len(planted), seconds=round(seconds, 1),
    cpu_seconds=round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
    search=r.search, threshold=r.threshold, groups=len(r.groups), planted_found=len(planted & found),
    vectors_mb=round(v.nbytes / 2**20), peak_rss_mb=round(after.ru_maxrss / 1024),
    rss_peak_before_call_mb=round(before.ru_maxrss / 1024))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
