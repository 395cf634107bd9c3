"""Second opinion for duplicate candidates: is one picture a re-encoded, resized, slightly cropped, lightly
overlaid or colour-tweaked copy of the other? Pixel alignment on small grey thumbnails.

The pooled VGG vector alone cannot tell a 15 % off-centre crop of a photo (cosine distance up to ~0.13 on the
shared cat photos) from another photo of a similar tabby cat (~0.09): pooled features keep *what* is in the
picture, not *where*. Pixels keep where: a copy aligns with its original at some scale and shift with a
normalised cross-correlation near 1, a different photo of the same scene does not. NCC is invariant to
brightness/contrast changes, survives JPEG artefacts and small overlays, and a mirror image does not align
(flips count as different pictures, as search/duplicates.py says).

Two questions, asked of different pairs (search/duplicates.py):
- `same`, for pairs between the vector cut and 3x it: do the pictures align? (crops, look-alikes)
- `mirrored`, for pairs under the cut, which are the same picture by their vectors whatever the pixels say (a
  stamped text box or logo can pull the NCC under SAME while the vectors barely move): does the one align
  clearly better with the other mirrored than as it is? Only then are they kept apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

SIDE = 64  # thumbnail side: enough structure to align, tiny to store (4 KB as float32)
SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)  # the smaller picture covers 80-100 % of the larger one (per side)
# NCC at or above: the same picture. On the shared cat/dog photos (bench/duplicates.py, 669 originals and 97
# photos x 4 edits measured): every edit scored >= 0.90 against its original (crop85 lowest; jpeg40, resize60 and
# watermark >= 0.97), while the 169 pairs of distinct photos under 0.15 cosine distance scored at most 0.765 (two
# frontal close-ups of orange kittens) and otherwise <= 0.69. The cut sits between, with ~0.05 to the edits.
SAME = 0.85


def thumbnail(data: bytes) -> npt.NDArray[np.float32]:
    """SIDE x SIDE grey thumbnail of the whole image (aspect squashed: crops that keep the aspect still align)."""
    from PIL import Image  # here: only the pixel check decodes (duplicates --no-pixel-check needs no Pillow)

    from imgidx.indexer.images import decode, to_rgb

    img = to_rgb(decode(data, SIDE))
    grey = img.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float32)


def similarity(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Best normalised cross-correlation of one thumbnail, shrunk to each of SCALES, over every shift inside the
    other (both ways round): ~1 for the same picture, well below for a different one."""
    return max(_best(a, b), _best(b, a))


def _best(big: npt.NDArray[np.float32], small: npt.NDArray[np.float32]) -> float:
    from scipy.signal import fftconvolve  # here: scipy.signal costs ~1.5 s to import, and only the pixel check uses it

    best = -1.0
    big = big.astype(np.float64)
    # integral images of the pixels and their squares: every window's sum and sum of squares in O(1)
    s1 = np.pad(big.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    s2 = np.pad((big * big).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    for s in SCALES:
        side = max(8, round(SIDE * s))
        t = (small if side == SIDE else _resize(small, side)).astype(np.float64)
        t -= t.mean()
        tn = float(np.sqrt((t * t).sum()))
        if tn == 0:
            continue
        # sum(w * t) over every window = sum((w - mean w) * t), t summing to 0: one FFT correlation
        num = fftconvolve(big, t[::-1, ::-1], mode="valid")
        box1 = s1[side:, side:] - s1[:-side, side:] - s1[side:, :-side] + s1[:-side, :-side]
        box2 = s2[side:, side:] - s2[:-side, side:] - s2[side:, :-side] + s2[:-side, :-side]
        wn = np.sqrt(np.maximum(box2 - box1 * box1 / (side * side), 0.0))
        best = max(best, float((num / np.maximum(wn * tn, 1e-6)).max()))
    return best


def _resize(a: npt.NDArray[np.float32], side: int) -> npt.NDArray[np.float32]:
    from PIL import Image

    img = Image.fromarray(a.astype(np.float32), mode="F").resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


# A mirror image aligns with the flipped thumbnail at ~1 and as it is far lower; a stamped or cropped copy the
# other way round. A near-symmetric picture scores about the same both ways: that pair stays grouped (its mirror
# is hardly another picture), hence the margin.
MIRROR_MARGIN = 0.05
CACHED_THUMBS = 20_000  # kept at once by a verifier: 80 MB as uint8, whatever the index size


class PixelCheck:
    """The pixel check of find_duplicates: `check(pairs)` (= `same`) and `check.mirrored(pairs)`, pairs (m, 2) of
    row indices -> (m,) bool. load(row) gives a row's file bytes (None: unavailable: such a pair is neither the
    same nor a mirror). Files are read and thumbnailed only for rows in a pair asked about, pairs in row order,
    and at most `cache` thumbnails are held (oldest dropped first), so memory stays bounded on any index."""

    def __init__(self, load: Callable[[int], bytes | None], same: float = SAME, cache: int = CACHED_THUMBS):
        self.load, self.same_cut, self.cache = load, same, cache
        self.thumbs: dict[int, npt.NDArray[np.uint8] | None] = {}

    def thumb(self, row: int) -> npt.NDArray[np.float32] | None:
        if row not in self.thumbs:
            data = self.load(row)
            try:
                t = None if data is None else thumbnail(data)
            except Exception:  # noqa: BLE001 - a second opinion: an undecodable file just gives none
                t = None
            if len(self.thumbs) >= self.cache:
                del self.thumbs[next(iter(self.thumbs))]
            self.thumbs[row] = None if t is None else t.astype(np.uint8)  # BOX-resized L pixels: exact in uint8
        t = self.thumbs[row]
        return None if t is None else t.astype(np.float32)

    def _each(self, pairs: npt.NDArray[np.int64], decide) -> npt.NDArray[np.bool_]:
        out = np.zeros(len(pairs), dtype=bool)
        for k in np.lexsort((pairs[:, 1], pairs[:, 0])) if len(pairs) else []:
            i, j = pairs[k]
            a, b = self.thumb(int(i)), self.thumb(int(j))
            out[k] = a is not None and b is not None and decide(a, b)
        return out

    def __call__(self, pairs: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        return self.same(pairs)

    def same(self, pairs: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """True where the two pictures align (NCC >= the SAME cut)."""
        return self._each(pairs, lambda a, b: similarity(a, b) >= self.same_cut)

    def mirrored(self, pairs: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """True where one picture is the other's mirror image: it aligns with the flipped thumbnail at SAME or
        more, and by MIRROR_MARGIN better than as it is."""

        def mirror(a, b) -> bool:
            flipped = similarity(a, b[:, ::-1].copy())  # low for nearly every copy: one correlation then
            return flipped >= self.same_cut and flipped >= similarity(a, b) + MIRROR_MARGIN

        return self._each(pairs, mirror)


def verifier(load: Callable[[int], bytes | None], same: float = SAME, cache: int = CACHED_THUMBS) -> PixelCheck:
    """The pixel check for find_duplicates(verify=...): see PixelCheck."""
    return PixelCheck(load, same, cache)
