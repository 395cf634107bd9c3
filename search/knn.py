"""Nearest neighbours with their attribution metadata (read-only use of the store)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imgidx.indexer import layout
from imgidx.indexer.errors import InvalidArgument, NotFound
from imgidx.indexer.licenses import license_name
from imgidx.indexer.store import Store
from imgidx.results import Neighbour


def nearest(
    store: Store,
    query: npt.NDArray[np.float32],
    k: int,
    *,
    collection: str | None = None,
    include_flagged: bool = False,
) -> list[Neighbour]:
    """The k best hits for one query vector, best first, each with score and metadata.

    Photos that a stored clean flagged in `collection` are left out unless include_flagged."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InvalidArgument(f"k must be a whole number > 0; received {k!r}")
    allowed = None
    if collection is not None:
        allowed = member_ids(store, collection, include_flagged=include_flagged)
    hits = store.search(query.reshape(1, -1), int(k), allowed=allowed)[0]
    return describe(store, [(h.photo_id, h.score) for h in hits])


def check_collection(store: Store, name: str) -> None:
    """An unknown collection name is NotFound, with the names that are known."""
    names = store.collection_names()
    if name not in names:
        raise NotFound(f"no collection {name!r} in the index (collections: {', '.join(names) or 'none yet'})")


def member_ids(store: Store, name: str, *, include_flagged: bool = True) -> list[int]:
    """Embedded photos of a collection (an unknown name is NotFound)."""
    check_collection(store, name)
    return store.vector_ids(name, include_flagged=include_flagged)


def describe(store: Store, scored: list[tuple[int, float]]) -> list[Neighbour]:
    ids = [pid for pid, _ in scored]
    rows = store.photo_rows(ids)
    colls = store.collections_of(ids)
    out = []
    for pid, score in scored:
        r = rows[pid]
        path = str(layout.local_file(store.home, r["path"])) if r["path"] else ""
        out.append(
            Neighbour(
                id=pid,
                source_id=r["source_id"],
                score=round(float(score), 6),
                collections=tuple(colls[pid]),
                title=r["title"],
                owner=r["owner_name"] or r["owner"],
                license=r["license"],
                license_name=license_name(r["license"]),
                page_url=r["page_url"],
                image_url=r["url"] or "",
                path=path,
            )
        )
    return out
