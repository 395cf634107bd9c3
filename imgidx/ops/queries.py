"""The reading operations of an index on an open Store: stored and caller's vectors, the nearest photos with
their attribution (`Neighbour`), a photo's record and file, the collections and their clean members."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from imgidx.indexer import layout
from imgidx.indexer.errors import InvalidArgument, NotFound, StoreError
from imgidx.indexer.licenses import license_name
from imgidx.indexer.store import Store
from imgidx.search.knn import member_ids

from ..results import CollectionInfo, Neighbour, PhotoInfo

PhotoInput = str | os.PathLike[str] | bytes  # a photo file, or its bytes
Embed = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]  # pixels (N, 224, 224, 3) -> unit vectors


def check_photo_id(value: object) -> int:
    """A caller's photo id: a whole number (numpy's too), never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"a photo id is a whole number; received {value!r}")
    return int(value)


# ---- vectors ----------------------------------------------------------------------------------------------------
def stored_vectors(store: Store, ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """The stored vectors of `ids`, in order; an id without a vector is NotFound."""
    try:
        return store.vectors(list(ids))
    except StoreError:
        missing = [i for i in ids if not store.has_vector(i)]
        if len(missing) == 1:
            raise NotFound(f"no indexed photo with id {missing[0]}") from None
        raise NotFound(f"no indexed photos with ids {missing[:20]}") from None


def query_vector(store: Store, vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A caller's vector as a unit float32 vector of the index's dimension."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    dim = store.stamp.dim if store.stamp else None
    if dim is not None and v.shape[0] != dim:
        raise InvalidArgument(f"the vector has {v.shape[0]} dimensions; the index's vectors have {dim}")
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise InvalidArgument("the vector must be finite and not all zeros")
    return v / norm


def photo_pixels(photo: PhotoInput) -> npt.NDArray[np.uint8]:
    """A caller's photo (a file path or the file's bytes) as the model's input pixels."""
    from imgidx.indexer.errors import ImageError
    from imgidx.indexer.images import prepare
    from imgidx.search.inputs import read_photo

    if isinstance(photo, (bytes, bytearray, memoryview)):
        try:
            return prepare(bytes(photo))
        except ImageError as e:
            raise InvalidArgument(f"the photo cannot be used: {e.reason}") from None
    if isinstance(photo, (str, os.PathLike)):
        return read_photo(Path(photo))
    raise InvalidArgument(f"a photo is a file path or the file's bytes; received {type(photo).__name__}")


def similar(
    store: Store,
    k: int,
    *,
    photo: PhotoInput | None = None,
    id: int | None = None,  # noqa: A002
    vector: npt.ArrayLike | None = None,
    embed: Embed | None = None,
    collection: str | None = None,
    include_flagged: bool = False,
) -> list[Neighbour]:
    """The k nearest photos to one query: an indexed photo's id, a vector, or a photo that `embed` turns into one."""
    if id is not None:
        query = stored_vectors(store, [id])[0]
    elif vector is not None:
        query = query_vector(store, vector)
    else:
        assert photo is not None and embed is not None
        query = embed(photo_pixels(photo)[None])[0]
    return nearest(store, query, k, collection=collection, include_flagged=include_flagged)


# ---- search results with their attribution --------------------------------------------------------------------
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


# ---- photos and collections -------------------------------------------------------------------------------------
def photo_info(store: Store, photo_id: int) -> PhotoInfo:
    row = store.photo_rows([photo_id]).get(photo_id)
    if row is None:
        raise NotFound(f"no photo with id {photo_id}")
    [photo] = describe(store, [(photo_id, 0.0)])
    kept = {c for c in photo.collections if photo_id in store.vector_ids(c, include_flagged=False)}
    return PhotoInfo(
        photo=photo,
        source=row["source"],
        state=row["state"],
        width=row["width"],
        height=row["height"],
        date_taken=row["date_taken"],
        date_upload=row["date_upload"],
        error=row["error"],
        tags=tuple(row["tags"].split()) if row["tags"] else (),
        # a stored clean flags a photo in one collection (its membership), not everywhere
        flagged_in=tuple(c for c in photo.collections if c not in kept),
    )


def photo_file(store: Store, photo_id: int) -> Path:
    """The photo's local file, from the database only; it must lie inside the data home (downloads) or the
    folder the photo was indexed from (folder photos)."""
    row = store.photo_rows([photo_id]).get(photo_id)
    if row is None:
        raise NotFound(f"no photo with id {photo_id}")
    if not row["path"]:
        raise NotFound(f"photo {photo_id} has no local file (it was never downloaded)")
    # realpath, not abspath: a symlink inside the folder that points outside it must not be served
    base = Path(os.path.realpath(row["origin"] if row["source"] == "folder" else store.home))
    path = Path(os.path.realpath(layout.local_file(base, row["path"])))  # links resolved; an absolute path stays
    if base not in path.parents:
        raise NotFound(f"photo {photo_id}'s file is outside its folder; not served")
    if not path.is_file():
        raise NotFound(f"photo {photo_id}'s file is missing on disk")
    return path


def collections(store: Store) -> list[CollectionInfo]:
    counts = store.counts()
    return [CollectionInfo(name, n, n - counts["clean"][name]) for name, n in counts["collections"].items()]


def collection_vectors(store: Store, name: str, *, include_flagged: bool = True) -> tuple[list[int], np.ndarray]:
    ids = member_ids(store, name, include_flagged=include_flagged)
    if not ids:
        raise NotFound(f"collection {name!r} has no embedded photos yet")
    return ids, store.vectors(ids)


def labelled_ids(store: Store, collections: Sequence[str]) -> tuple[list[int], list[str]]:
    """(ids, labels) of the clean members of `collections`; a photo in two of them is ambiguous and left out."""
    members = {name: member_ids(store, name, include_flagged=False) for name in dict.fromkeys(collections)}
    seen: dict[int, int] = {}
    for ids in members.values():
        for pid in ids:
            seen[pid] = seen.get(pid, 0) + 1
    pairs = [(pid, name) for name, ids in members.items() for pid in ids if seen[pid] == 1]
    return [p for p, _ in pairs], [n for _, n in pairs]


def two_or_more(collections: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(collections, str) or len(set(collections)) < 2:
        raise InvalidArgument(f"{what} needs at least two different collections; received {list(collections)!r}")
    return tuple(collections)
