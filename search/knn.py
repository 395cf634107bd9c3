"""A collection's members for a search (the one collection check). The search itself and its attribution records
(imgidx.results.Neighbour) are the API's: imgidx/ops/queries.py `nearest` and `describe`."""

from __future__ import annotations

from imgidx.indexer.errors import NotFound
from imgidx.indexer.store import Store


def check_collection(store: Store, name: str) -> None:
    """An unknown collection name is NotFound, with the names that are known."""
    names = store.collection_names()
    if name not in names:
        raise NotFound(f"no collection {name!r} in the index (collections: {', '.join(names) or 'none yet'})")


def member_ids(store: Store, name: str, *, include_flagged: bool = True) -> list[int]:
    """Embedded photos of a collection (an unknown name is NotFound)."""
    check_collection(store, name)
    return store.vector_ids(name, include_flagged=include_flagged)
