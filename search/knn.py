"""Nearest neighbours with their attribution metadata (read-only use of the store)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imgidx.indexer import layout
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.licenses import license_name
from imgidx.indexer.store import Store


def nearest(
    store: Store,
    query: npt.NDArray[np.float32],
    k: int,
    *,
    collection: str | None = None,
    include_flagged: bool = False,
) -> list[dict]:
    """The k best hits for one query vector, best first, each with score and metadata (the --json contract).

    Photos that `clean --apply` flagged in `collection` are left out unless include_flagged."""
    if k <= 0:
        raise ConfigError(f"-k must be > 0; received {k}")
    allowed = None
    if collection is not None:
        allowed = member_ids(store, collection, include_flagged=include_flagged)
    hits = store.search(query.reshape(1, -1), k, allowed=allowed)[0]
    return describe(store, [(h.photo_id, h.score) for h in hits])


def member_ids(store: Store, name: str, *, include_flagged: bool = True) -> list[int]:
    """Embedded photos of a collection (an unknown name is an error that lists the known ones)."""
    if name not in store.collection_names():
        known = ", ".join(store.collection_names()) or "none yet"
        raise ConfigError(f"no collection {name!r} in the index (collections: {known})")
    return store.vector_ids(name, include_flagged=include_flagged)


def describe(store: Store, scored: list[tuple[int, float]]) -> list[dict]:
    ids = [pid for pid, _ in scored]
    rows = store.photo_rows(ids)
    colls = store.collections_of(ids)
    out = []
    for pid, score in scored:
        r = rows[pid]
        path = str(layout.local_file(store.home, r["path"])) if r["path"] else ""
        out.append(
            {
                "id": pid,
                "source_id": r["source_id"],
                "score": round(float(score), 6),
                "collections": colls[pid],
                "title": r["title"],
                "owner": r["owner_name"] or r["owner"],
                "license": license_name(r["license"]),
                "page_url": r["page_url"],
                "path": path,
            }
        )
    return out
