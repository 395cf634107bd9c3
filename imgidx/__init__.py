"""imgidx: an image-embedding index (photos -> VGG16 vectors -> SQLite + FAISS -> similar / clean / train).

    import imgidx
    idx = imgidx.open("data")                           # the index in ./data (nothing is read yet)
    idx.build(imgidx.sources.Folder("photos/"))         # or imgidx.sources.Flickr(["cat", "dog"], count=200)
    hits = idx.similar("photo.jpg", k=10)               # or similar(id=3), similar(vector=v); collection="cat"
    ranking = idx.clean("cat"); report = idx.train("pets", ["cat", "dog"]); idx.classify("pets", ["x.jpg"])

Every call returns frozen records (imgidx.results) and raises imgidx's own exceptions (ImgidxError and its
subclasses). Opening an index imports no model framework: the model is built on the first call that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgidx import sources
from imgidx._version import __version__
from imgidx.index import Index, open
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import (
    ClassifierError,
    ConfigError,
    EmptyIndex,
    ImgidxError,
    InvalidArgument,
    LockedError,
    NoIndexError,
    NotFound,
    StampMismatch,
    StoreError,
)
from imgidx.indexer.records import Photo, Stamp
from imgidx.results import (
    AuditReport,
    AuditRow,
    BuildReport,
    CleanReport,
    CleanRow,
    CollectionInfo,
    Failure,
    IndexInfo,
    Neighbour,
    NextPhoto,
    PhotoInfo,
    Prediction,
    ReindexReport,
    Review,
    ReviewQueue,
    TrainReport,
)

if TYPE_CHECKING:
    from imgidx.indexer.verify import Report as VerifyReport
    from imgidx.search.duplicates import Duplicates
    from imgidx.search.export import ExportResult

__all__ = [
    "AuditReport",
    "AuditRow",
    "BuildReport",
    "ClassifierError",
    "CleanReport",
    "CleanRow",
    "CollectionInfo",
    "ConfigError",
    "Duplicates",
    "EmptyIndex",
    "ExportResult",
    "Failure",
    "ImgidxError",
    "Index",
    "IndexInfo",
    "InvalidArgument",
    "LockedError",
    "Neighbour",
    "NextPhoto",
    "NoIndexError",
    "NotFound",
    "Photo",
    "PhotoInfo",
    "Prediction",
    "ReindexReport",
    "Review",
    "ReviewQueue",
    "Settings",
    "Stamp",
    "StampMismatch",
    "StoreError",
    "TrainReport",
    "VerifyReport",
    "__version__",
    "open",
    "sources",
]


# records of modules loaded only by the calls that return them (opening an index stays light)
_LAZY = {
    "VerifyReport": ("imgidx.indexer.verify", "Report"),
    "Duplicates": ("imgidx.search.duplicates", "Duplicates"),
    "ExportResult": ("imgidx.search.export", "ExportResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'imgidx' has no attribute {name!r}")
