"""Where photos come from. A source is anything with `photos()` yielding `Photo` records; `Index.build` takes any.

Flickr(["cat", "dog"], count=200)   a Flickr search per query, one collection each (needs FLICKR_API_KEY)
Folder("photos/")                   image files; first-level sub-folders become collections
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError, InvalidArgument
from imgidx.indexer.records import Photo

__all__ = ["Flickr", "Folder", "Photo"]


class Folder:
    """Image files under `path`; files in sub-folders join the sub-folder's collection, top-level files the
    collection `as_name` (default: the folder's own name)."""

    def __init__(self, path: str | os.PathLike[str], *, as_name: str | None = None):
        from imgidx.indexer.sources import FolderSource

        self._source = FolderSource(Path(path), as_name)
        self.root = self._source.root
        self.name = f"folder {self.root}"

    def photos(self) -> Iterator[Photo]:
        found = False
        for photo in self._source.photos():
            found = True
            yield photo
        if not found:
            raise ConfigError(f"no image files (.jpg .png .gif .webp .bmp .tif) under {self.root}")

    def __repr__(self) -> str:
        return f"Folder({str(self.root)!r})"


class Flickr:
    """Flickr searches, one collection per query (named by the query, or `as_name` for a single query).

    sort: relevance | recent | interesting; license: Flickr licence ids ("4,5,9,10" or [4, 5]); size: the size
    letter to fetch (z = 640 px). The API key comes from `settings` (default: the environment, FLICKR_API_KEY).
    on_query(text, found) is called after each query's search."""

    def __init__(
        self,
        queries: str | Iterable[str],
        *,
        count: int = 100,
        sort: str = "relevance",
        license: str | Iterable[int] | None = None,  # noqa: A002
        size: str = "z",
        as_name: str | None = None,
        settings: Settings | None = None,
        on_query: Callable[[str, int], None] | None = None,
    ):
        from imgidx.indexer.licenses import parse_license_ids
        from imgidx.indexer.sources import FlickrQuery

        self.queries = [queries] if isinstance(queries, str) else list(queries)
        if not self.queries:
            raise InvalidArgument("give at least one Flickr search text")
        if as_name and len(self.queries) > 1:
            raise InvalidArgument("as_name names one collection: use it with a single query")
        try:
            if isinstance(license, str):
                licenses = tuple(parse_license_ids(license))
            else:
                licenses = tuple(parse_license_ids(",".join(map(str, license)))) if license else ()
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        self._queries = [
            FlickrQuery(text, count=count, sort=sort, licenses=licenses, size=size, collection=as_name or text)
            for text in self.queries
        ]
        self.settings, self.on_query = settings, on_query
        self.name = "flickr"

    def photos(self) -> Iterator[Photo]:
        from imgidx.indexer.compose import make_flickr_source

        source = make_flickr_source(self.settings or Settings.from_env())
        for q in self._queries:
            found = list(source.search(q))
            if self.on_query is not None:
                self.on_query(q.text, len(found))
            yield from found

    def __repr__(self) -> str:
        return f"Flickr({self.queries!r})"
