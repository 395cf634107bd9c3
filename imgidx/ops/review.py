"""A person's decisions on the flags of a collection's photos, on an open Store: stored with who and when, apart
from the automatic flags (the newest decision counts; undo withdraws it)."""

from __future__ import annotations

from collections.abc import Sequence

from imgidx.indexer.errors import InvalidArgument, NotFound
from imgidx.indexer.store import Store

from ..results import Review

MAX_REVIEWER = 100  # characters of a reviewer's name


def _review(row) -> Review:
    return Review(
        photo_id=row["photo_id"],
        collection=row["collection"],
        decision=row["decision"],
        reviewer=row["reviewer"],
        created_at=row["created_at"],
        source=row["source"],
        automatic=bool(row["automatic"]),
    )


def check_review(store: Store, collection: str, photo_id: int, decision: str, reviewer: str, source: str) -> str:
    """Refuse what is not a decision on a membership; returns the reviewer's name, tidied."""
    from imgidx.indexer.store.catalog import DECISIONS, REVIEW_SOURCES

    if decision not in DECISIONS:
        raise InvalidArgument(f"a decision is one of {', '.join(DECISIONS)}; received {decision!r}")
    if source not in REVIEW_SOURCES:
        raise InvalidArgument(f"a review's source is one of {', '.join(REVIEW_SOURCES)}; received {source!r}")
    if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > MAX_REVIEWER:
        raise InvalidArgument(f"a reviewer is a name of 1 to {MAX_REVIEWER} characters; received {reviewer!r}")
    check_membership(store, collection, photo_id)
    return " ".join(reviewer.split())


def check_membership(store: Store, collection: str, photo_id: int) -> None:
    from imgidx.search.knn import check_collection

    check_collection(store, collection)
    if not store.is_member(collection, photo_id):
        raise NotFound(f"photo {photo_id} is not in collection {collection!r}")


def review(
    store: Store, collection: str, photo_id: int, decision: str, *, reviewer: str = "anonymous", source: str = "clean"
) -> Review:
    """Store a person's decision: "flag" (the photo leaves the collection's clean set) or "keep" (it stays, whatever
    clean or duplicates flag later). The newest decision counts; undo_review withdraws it."""
    reviewer = check_review(store, collection, photo_id, decision, reviewer, source)
    store.add_review(collection, photo_id, decision, reviewer=reviewer, source=source)
    return current_review(store, collection, photo_id)  # type: ignore[return-value]


def review_photos(
    store: Store,
    collection: str,
    photo_ids: Sequence[int],
    decision: str,
    *,
    reviewer: str = "anonymous",
    source: str = "clean",
) -> list[Review]:
    """The same decision on several photos: every one is checked before any is stored (one bad id stores none)."""
    if not photo_ids:
        raise InvalidArgument("no photo ids to review")
    for pid in photo_ids:
        reviewer = check_review(store, collection, pid, decision, reviewer, source)
    store.add_reviews(collection, list(dict.fromkeys(photo_ids)), decision, reviewer=reviewer, source=source)
    return [current_review(store, collection, pid) for pid in dict.fromkeys(photo_ids)]  # type: ignore[misc]


def undo_reviews(store: Store, collection: str, photo_ids: Sequence[int]) -> list[Review | None]:
    """Withdraw the newest decision on each photo (all checked first); the decisions that count now."""
    if not photo_ids:
        raise InvalidArgument("no photo ids to undo")
    for pid in photo_ids:
        check_membership(store, collection, pid)
    store.remove_last_reviews(collection, list(dict.fromkeys(photo_ids)))
    return [current_review(store, collection, pid) for pid in dict.fromkeys(photo_ids)]


def undo_review(store: Store, collection: str, photo_id: int) -> Review | None:
    """Withdraw the newest decision on a photo; returns the one that counts now (None: the automatic flag)."""
    check_membership(store, collection, photo_id)
    store.remove_last_review(collection, photo_id)
    return current_review(store, collection, photo_id)


def current_review(store: Store, collection: str, photo_id: int) -> Review | None:
    rows = [r for r in store.reviews(collection) if r["photo_id"] == photo_id]
    return _review(rows[-1]) if rows else None


def reviews(store: Store, collection: str, *, history: bool = False) -> list[Review]:
    from imgidx.search.knn import check_collection

    check_collection(store, collection)
    return [_review(r) for r in store.reviews(collection, history=history)]
