"""Sources: where photos come from. One interface, `Source.photos() -> Iterator[Photo]`; implementations:

- `FlickrSource(queries, count=, sort=, license=, size=, as_name=)` (flickr.py; API calls in flickr_api.py),
- `FolderSource(path, as_name=)` (folder.py): local files, read in place,
- `UrlListSource(path, as_name=)` (urllist.py): a CSV/Parquet file of URLs + metadata, as img2dataset reads.

A Photo carries either a `url` (the pipeline downloads it through the Fetcher and keeps the file under the data
home) or a `path` (a local file it reads). The pipeline never asks which source a photo came from. Only
flickr_api.py and fetch.py touch the network. Implementations are imported on first use (flickrapi is slow).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from ..records import Photo


@runtime_checkable
class Source(Protocol):
    name: str  # stored with every photo it yields (Photo.source); part of the photo's identity

    def photos(self) -> Iterator[Photo]: ...


_LAZY = {
    "FlickrSource": "flickr",
    "FlickrQuery": "flickr",
    "FlickrClient": "flickr",
    "FolderSource": "folder",
    "UrlListSource": "urllist",
    # short names for the public API
    "Flickr": "flickr:FlickrSource",
    "Folder": "folder:FolderSource",
    "UrlList": "urllist:UrlListSource",
}
__all__ = ["Source", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = _LAZY[name].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr or name)
