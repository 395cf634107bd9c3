"""Photo bytes for the web page: the original file with its sniffed media type, or a cached JPEG thumbnail."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imgidx.indexer.errors import ImageError
from imgidx.indexer.images import FORMATS, thumbnail

MIN_SIZE, MAX_SIZE = 16, 1024
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


class ThumbnailError(Exception):
    pass


def media_type(path: Path) -> str:
    """The file's type from its content (never from its name); refuses what is not a known image."""
    try:
        with Image.open(path, formats=FORMATS) as img:
            fmt = img.format or ""
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ThumbnailError(f"{path.name} is not a readable image ({type(e).__name__})") from None
    if fmt not in MEDIA_TYPES:
        raise ThumbnailError(f"{path.name} is a {fmt or 'unknown'} image, which is not served")
    return MEDIA_TYPES[fmt]


def make_thumbnail(path: Path, size: int) -> bytes:
    """A JPEG whose longest side is `size` px (never enlarged), EXIF-rotated, transparency on white."""
    try:
        img = thumbnail(path.read_bytes(), size)
    except ImageError as e:
        raise ThumbnailError(f"{path.name} cannot be made into a thumbnail ({e.reason})") from None
    except OSError as e:  # the file went away or cannot be read: one refused thumbnail, never a 500
        raise ThumbnailError(f"{path.name} cannot be read ({type(e).__name__})") from None
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class ThumbnailCache:
    """An LRU of thumbnail bytes, bounded in bytes; keyed by (photo id, size, file mtime)."""

    def __init__(self, max_bytes: int = 64 * 2**20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, photo_id: int, path: Path, size: int) -> bytes:
        key = (photo_id, size, path.stat().st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make_thumbnail(path, size)
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data
