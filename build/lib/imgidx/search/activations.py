"""Tile a conv layer's feature maps into one grayscale image (seed 002's "all feature maps" grid).

Pure: the caller runs the model and passes the activations of one image; this only arranges pixels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

# Gaps between tiles are white: every tile spans 0..255, so no gap colour is unambiguous, and white
# separates dark (mostly inactive) maps best, which is what most ReLU maps look like.
PAD_VALUE = 255


def normalise_channels(maps: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Min-max scale each channel of (h, w, c) to 0..255 on its own; a constant channel becomes 0.

    Per channel because activations differ by orders of magnitude between filters: a shared scale would
    leave most maps black.
    """
    values = np.asarray(maps, dtype=np.float64)
    low = values.min(axis=(0, 1), keepdims=True)
    span = values.max(axis=(0, 1), keepdims=True) - low
    scaled = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    return np.rint(scaled * 255).astype(np.uint8)


def activation_grid(maps: npt.NDArray[np.floating], per_row: int = 16, pad: int = 1) -> Image.Image:
    """Grayscale ("L") image of every channel of ``maps`` (h, w, c), ``per_row`` tiles to a row.

    Each tile is followed by ``pad`` white pixels to its right and below it, so the image is
    rows·(h + pad) high and min(per_row, c)·(w + pad) wide, with rows = ceil(c / per_row). A leading
    batch axis of size 1 (what model.predict returns for one image) is accepted and dropped.
    """
    grid = _check_maps(maps)
    if isinstance(per_row, bool) or not isinstance(per_row, int) or per_row < 1:
        raise ValueError(f"per_row must be an integer >= 1; received {per_row!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0; received {pad!r}")
    h, w, c = grid.shape
    cols = min(per_row, c)
    rows = -(-c // per_row)
    canvas = np.full((rows * (h + pad), cols * (w + pad)), PAD_VALUE, dtype=np.uint8)
    tiles = normalise_channels(grid)
    for channel in range(c):
        top = (channel // per_row) * (h + pad)
        left = (channel % per_row) * (w + pad)
        canvas[top : top + h, left : left + w] = tiles[:, :, channel]
    return Image.fromarray(canvas)  # 2-D uint8 → mode "L"


def _check_maps(maps: object) -> npt.NDArray[np.floating]:
    if not isinstance(maps, np.ndarray):
        raise TypeError(f"maps must be a numpy array (h, w, c); received {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3 or 0 in maps.shape:
        raise TypeError(f"maps must have shape (h, w, c) with no empty axis; received {maps.shape}")
    if not (np.issubdtype(maps.dtype, np.floating) or np.issubdtype(maps.dtype, np.integer)):
        raise TypeError(f"maps must hold numbers; received dtype {maps.dtype}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    return maps
