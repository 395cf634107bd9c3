"""A URL list: a CSV or Parquet file of photo URLs plus optional metadata columns, as img2dataset reads them.

Columns (any order; only `url` is required): url, id (or key), title, owner, license, page_url, caption,
collection. A row's id is its `id`/`key` column when present, else the sha1 of its URL, so a list read twice
(or two lists naming the same URL) adds each photo once. Its collection is the `collection` column when
present and not empty, else `as_name`, else the file's stem. Rows without a usable http(s) URL are skipped with
a warning. CSV needs nothing; Parquet needs pyarrow (the `parquet` extra).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

from .. import names
from ..errors import ConfigError
from ..records import Photo

log = logging.getLogger(__name__)

NAME = "urls"
ID_COLUMNS = ("id", "key")
TEXT_COLUMNS = ("title", "owner", "page_url", "caption", "collection")
FIX_COLLECTION = "correct the collection column (an empty cell puts the row in the list's collection)"


class UrlListSource:
    """Photos named by URL in a .csv (or .tsv) or .parquet file; downloaded by the pipeline like Flickr's."""

    name = NAME

    def __init__(self, path: str | Path, *, as_name: str | None = None, url_column: str = "url"):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"URL list {path} is not a file")
        if self.path.suffix.lower() not in (".csv", ".tsv", ".parquet", ".pq"):
            raise ConfigError(f"URL list {path}: expected a .csv, .tsv or .parquet file")
        self.as_name, self.url_column = as_name, url_column

    def photos(self) -> Iterator[Photo]:
        seen: set[str] = set()
        checked: set[str] = set()
        for n, row in enumerate(self._rows(), start=2):  # row 1 is the header of a CSV
            photo = self._photo(row)
            if photo is not None and photo.collection not in checked:  # before any photo is stored
                checked.add(names.check(photo.collection, f"{self.path}, row {n}", todo=FIX_COLLECTION))
            if photo is None:
                log.warning("%s: row %d has no http(s) URL in column %r; skipped", self.path, n, self.url_column)
                continue
            if photo.source_id in seen:
                continue
            seen.add(photo.source_id)
            yield photo
        if not seen:
            raise ConfigError(f"no http(s) URLs in column {self.url_column!r} of {self.path}")

    def _photo(self, row: dict) -> Photo | None:
        url = _text(row.get(self.url_column))
        if not url.lower().startswith(("http://", "https://")):
            return None
        key = next((_text(row.get(c)) for c in ID_COLUMNS if _text(row.get(c))), "")
        source_id = key or hashlib.sha1(url.encode()).hexdigest()
        text = {c: _text(row.get(c)) for c in TEXT_COLUMNS}
        known = {self.url_column, *ID_COLUMNS, *TEXT_COLUMNS, "license"}
        return Photo(
            source=NAME,
            source_id=source_id,
            collection=text["collection"] or self.as_name or self.path.stem,
            url=url,
            title=text["title"] or text["caption"],
            owner=text["owner"],
            license=_license(row.get("license")),
            page_url=text["page_url"],
            extra={k: v for k, v in row.items() if k not in known and _text(v)},
        )

    def _rows(self) -> Iterator[dict]:
        if self.path.suffix.lower() in (".parquet", ".pq"):
            yield from _parquet_rows(self.path, self.url_column)
            return
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            dialect = "excel-tab" if self.path.suffix.lower() == ".tsv" else "excel"
            reader = csv.DictReader(f, dialect=dialect)
            if self.url_column not in (reader.fieldnames or []):
                raise ConfigError(
                    f"URL list {self.path} has no {self.url_column!r} column (header: {reader.fieldnames})"
                )
            yield from reader


def _parquet_rows(path: Path, url_column: str) -> Iterator[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Parquet URL lists needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ConfigError(f"URL list {path} is not a readable Parquet file ({str(e).splitlines()[0][:160]})") from None
    if url_column not in table.schema_arrow.names:
        raise ConfigError(f"URL list {path} has no {url_column!r} column (columns: {table.schema_arrow.names})")
    for batch in table.iter_batches(batch_size=10_000):
        yield from batch.to_pylist()


def _text(v: object) -> str:
    return "" if v is None else str(v).strip()


def _license(v: object) -> int | None:
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None
