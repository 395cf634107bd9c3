"""The one on-disk layout of a data home. Every path under $IMGIDX_HOME is computed here.

    imgidx.sqlite                        the catalogue (store/catalog.py)
    index/faiss.index                    the FAISS index (store/faiss_index.py)
    vectors.bin                          the exact vectors, one fixed-size row per slot (store/vectorfile.py)
    photos/<source>/<NN>/<stem>.<ext>    downloaded photos; NN = the stem's last two characters (100 per folder)
    build.lock                           one build at a time (compose.build_lock)
    classifiers/<name>.joblib            saved classifiers (search/classifier.py)
    cache/onnx/                          the Keras model exported as ONNX, per weights (embedders/onnx_export.py)
    demo-photos/                         the pictures `imgidx demo` generates

A numeric source id (Flickr's) is its own file stem, as homes made by earlier versions have it. Any other id (a
URL, a path, text from a remote list) is never used as a file name: its stem is `h` + 32 hex digits of its sha256,
so no id can climb out of the folder, collide with another source's files or exceed a file-name limit.
Photos of local sources (a folder) are not copied: their stored path is absolute; downloads are stored relative
to the home, so a home can be moved.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from . import atomic

DB_NAME = "imgidx.sqlite"
INDEX_NAME = "index/faiss.index"
VECTORS_NAME = "vectors.bin"
PHOTOS = "photos"
BUILD_LOCK = "build.lock"
CLASSIFIERS = "classifiers"
ONNX_CACHE = "cache/onnx"
DEMO_PHOTOS = "demo-photos"
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def db_file(home: Path) -> Path:
    return Path(home) / DB_NAME


def index_file(home: Path) -> Path:
    return Path(home) / INDEX_NAME


def vectors_file(home: Path) -> Path:
    return Path(home) / VECTORS_NAME


def photos_folder(home: Path) -> Path:
    """Where downloads are kept (photo_file says where each one goes)."""
    return Path(home) / PHOTOS


def build_lock_file(home: Path) -> Path:
    return Path(home) / BUILD_LOCK


def classifiers_folder(home: Path) -> Path:
    return Path(home) / CLASSIFIERS


def onnx_cache_folder(home: Path) -> Path:
    return Path(home) / ONNX_CACHE


def demo_photos_folder(home: Path) -> Path:
    return Path(home) / DEMO_PHOTOS


def file_stem(source_id: str) -> str:
    """The file name (without extension) of a photo's download: the id itself when it is ASCII digits only."""
    if source_id.isascii() and source_id.isdigit() and len(source_id) <= 40:
        return source_id
    return "h" + hashlib.sha256(source_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def photo_folder(home: Path, source: str, source_id: str) -> Path:
    if not _SOURCE.match(source):
        raise ValueError(f"a source name must be short lowercase letters, digits, '-' or '_'; received {source!r}")
    stem = file_stem(source_id)
    return photos_folder(home) / source / stem[-2:].rjust(2, "0")


def photo_file(home: Path, source: str, source_id: str, ext: str) -> Path:
    """Where a download of (source, source_id) with extension `ext` (jpg, png, ...) is kept."""
    if not ext.isalnum():
        raise ValueError(f"a photo extension must be letters and digits; received {ext!r}")
    return photo_folder(home, source, source_id) / f"{file_stem(source_id)}.{ext}"


def existing_photo(home: Path, source: str, source_id: str) -> Path | None:
    """The download an earlier run kept for (source, source_id), whatever its extension, or None."""
    folder = photo_folder(home, source, source_id)
    if not folder.is_dir():
        return None
    stem = file_stem(source_id)
    return next((p for p in sorted(folder.glob(f"{stem}.*")) if p.is_file() and not atomic.is_temp(p)), None)


def stored_path(home: Path, file: Path) -> str:
    """How a photo's file is recorded: relative to the home when it lies inside (downloads), else absolute."""
    try:
        return str(Path(file).relative_to(home))
    except ValueError:
        return str(file)


def local_file(home: Path, path: str) -> Path:
    """The file a recorded path names (relative paths are downloads inside the home)."""
    p = Path(path)
    return p if p.is_absolute() else Path(home) / p


def is_download(path: str) -> bool:
    """True for a recorded path of a download kept in the home (not a photo of a local source)."""
    return bool(path) and not Path(path).is_absolute()


def photo_files(home: Path) -> list[Path]:
    """Every photo file in the home's download area (temp files excluded)."""
    root = photos_folder(home)
    if not root.is_dir():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


def temp_files(home: Path) -> list[Path]:
    """Temp files of atomic writes in the home (index saves and downloads), finished or not."""
    found = list(index_file(home).parent.glob(".*.tmp"))
    root = photos_folder(home)
    if root.is_dir():
        found += [p for p in root.rglob(".*.tmp") if p.is_file()]
    return sorted(found)
