"""Deterministic photo pixels, rendered on request and cached.

Each topic has a base pattern and palette, so photos of one topic look alike and photos of different
topics differ clearly (the embeddings of a CNN separate them); each photo adds its own frequency,
phase, tint, shapes and noise derived from the seed and its id.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .corpus import SIZES, Photo

# topic -> (pattern, palette: background, foreground, accent)
TOPIC_STYLES: dict[str, tuple[str, tuple[tuple[int, int, int], ...]]] = {
    "cat": ("stripes", ((225, 130, 50), (70, 40, 20), (250, 235, 210))),
    "dog": ("spots", ((235, 235, 225), (25, 25, 25), (90, 160, 70))),
    "car": ("diagonal", ((200, 30, 40), (160, 160, 175), (25, 25, 35))),
    "lion": ("radial", ((235, 200, 70), (150, 115, 25), (250, 235, 160))),
    "meme": ("blocks", ((245, 245, 245), (15, 15, 15), (60, 120, 220))),
    "hostile": ("checker", ((255, 0, 255), (0, 0, 0), (0, 255, 0))),
}
PATTERNS = ("stripes", "spots", "diagonal", "radial", "blocks", "checker")
RENDER_EDGE = 1024  # larger sizes (originals) are rendered at this edge and upscaled
PLACEHOLDER_SIZE = (500, 374)
PLACEHOLDER_TEXT = "This photo is no longer available"


def topic_style(topic: str) -> tuple[str, tuple[tuple[int, int, int], ...]]:
    if topic in TOPIC_STYLES:
        return TOPIC_STYLES[topic]
    digest = hashlib.sha256(topic.encode()).digest()
    palette = tuple(tuple(digest[i : i + 3]) for i in (0, 3, 6))
    return PATTERNS[digest[9] % len(PATTERNS)], palette  # type: ignore[return-value]


def _grid(photo: Photo, w: int, h: int, square: bool) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in the photo's own frame (longest side = 1), so every size shows the same picture."""
    longest = max(photo.width, photo.height)
    ew, eh = photo.width / longest, photo.height / longest
    x0 = y0 = 0.0
    if square:
        side = min(ew, eh)
        x0, y0, ew, eh = (ew - side) / 2, (eh - side) / 2, side, side
    u = (x0 + (np.arange(w, dtype=np.float32) + 0.5) / w * ew)[None, :]
    v = (y0 + (np.arange(h, dtype=np.float32) + 0.5) / h * eh)[:, None]
    return np.broadcast_to(u, (h, w)), np.broadcast_to(v, (h, w))


def _pattern(name: str, u: np.ndarray, v: np.ndarray, freq: float, phase: float) -> np.ndarray:
    tau = 2 * np.pi
    if name == "stripes":  # wavy tabby stripes
        f = np.sin(tau * freq * (v + 0.08 * np.sin(tau * 2 * u)) + phase)
    elif name == "spots":
        f = np.sin(tau * freq * u + phase) * np.sin(tau * freq * v - phase)
        f = np.where(f > 0.55, 1.0, -1.0)
    elif name == "diagonal":
        f = np.sign(np.sin(tau * freq * (u + v) + phase))
    elif name == "radial":
        f = np.sin(tau * freq * np.hypot(u - 0.5, v - 0.4) + phase)
    elif name == "blocks":  # caption bars top and bottom, plain middle
        f = np.where((v % 0.5 < 0.08) & (np.sin(tau * freq * 3 * u + phase) > -0.3), 1.0, -1.0)
    else:  # checker
        f = np.sign(np.sin(tau * freq * u + phase) * np.sin(tau * freq * v))
    return ((f + 1) / 2).astype(np.float32)


def render_pixels(photo: Photo, w: int, h: int, square: bool, seed: int = 0) -> np.ndarray:
    pattern, palette = topic_style(photo.topic)
    rng = np.random.default_rng([seed, int(photo.id)])
    c0, c1, c2 = (np.array(c, dtype=np.float32) for c in palette)
    u, v = _grid(photo, w, h, square)
    f = _pattern(pattern, u, v, freq=6 * rng.uniform(0.85, 1.15), phase=rng.uniform(0, 2 * np.pi))
    img = c0 + (c1 - c0) * f[..., None]
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.03, 0.12, 2)
        mask = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 < 1
        img[mask] = 0.75 * (c2 + rng.uniform(-25, 25, 3)) + 0.25 * img[mask]
    img *= rng.uniform(0.95, 1.05, 3).astype(np.float32)
    noise = np.random.default_rng([seed, int(photo.id), w, h]).normal(0, 6, (h, w, 1)).astype(np.float32)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def render_jpeg(photo: Photo, size: str, seed: int = 0) -> bytes:
    """The JPEG for one size of a photo: the size's dims, its longest edge capped by the original."""
    w, h = photo.size_dims(size)
    square = SIZES[size][3]
    scale = min(1.0, RENDER_EDGE / max(w, h))
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    image = Image.fromarray(render_pixels(photo, rw, rh, square, seed), "RGB")
    if (rw, rh) != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def placeholder_png() -> bytes:
    """Flickr's photo_unavailable.png look-alike: 500×374 grey with the notice in the middle."""
    image = Image.new("RGB", PLACEHOLDER_SIZE, (232, 232, 232))
    draw = ImageDraw.Draw(image)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=22)
    except (TypeError, OSError):  # Pillow without FreeType
        font = ImageFont.load_default()
    box = draw.textbbox((0, 0), PLACEHOLDER_TEXT, font=font)
    x = (PLACEHOLDER_SIZE[0] - (box[2] - box[0])) // 2
    y = (PLACEHOLDER_SIZE[1] - (box[3] - box[1])) // 2
    draw.text((x, y), PLACEHOLDER_TEXT, fill=(150, 150, 150), font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def placeholder_gif() -> bytes:
    """The legacy photo_unavailable.gif."""
    out = io.BytesIO()
    Image.open(io.BytesIO(placeholder_png())).convert("P").save(out, "GIF")
    return out.getvalue()


class ImageCache:
    """LRU of rendered bodies, bounded by total bytes; thread-safe."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.renders = 0

    def get(self, key: tuple, make) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        body = make()
        with self._lock:
            self.renders += 1
            if key not in self._items:
                self._items[key] = body
                self._size += len(body)
            while self._size > self.max_bytes and len(self._items) > 1:
                _key, old = self._items.popitem(last=False)
                self._size -= len(old)
        return body

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0
