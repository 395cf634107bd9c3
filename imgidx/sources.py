"""Where photos come from. A source is anything with `photos()` yielding `Photo` records; `Index.build` takes any.

Flickr(["cat", "dog"], count=200)   a Flickr search per query, one collection each (needs FLICKR_API_KEY)
Folder("photos/")                   image files; first-level sub-folders become collections
UrlList("urls.csv")                 a CSV/TSV/Parquet list of photo URLs with optional metadata (img2dataset style)
"""

from __future__ import annotations

from imgidx.indexer.records import Photo
from imgidx.indexer.sources import Source
from imgidx.indexer.sources.flickr import FlickrSource as Flickr
from imgidx.indexer.sources.folder import FolderSource as Folder
from imgidx.indexer.sources.urllist import UrlListSource as UrlList

__all__ = ["Flickr", "Folder", "Photo", "Source", "UrlList"]
