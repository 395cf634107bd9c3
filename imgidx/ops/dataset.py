"""duplicates and export on an open Store, from the store to the pure cores: duplicate groups of an index's photos
(search/duplicates.py with the pixel check of search/pixels.py), flagging them reversibly, and exporting
collections (search/export.py).

What imgidx.Index.duplicates()/export() and the service's duplicates view call. Flags reuse clean's mechanism
(collections.flagged on the membership, with a clean_info whose "reason" is "duplicate of ID"), set on every
membership of the photo, so the photo leaves `similar --in`, `train` and `export` everywhere; nothing in the
schema changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from imgidx._version import __version__
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.layout import local_file
from imgidx.indexer.store import Store

if TYPE_CHECKING:  # imported where used: `import imgidx` stays light
    from imgidx.search.duplicates import DuplicateGroup, Duplicates, PhotoFacts
    from imgidx.search.export import ExportPhoto, ExportResult


def photo_ids(store: Store, collections: Sequence[str] = (), *, include_flagged: bool = True) -> list[int]:
    """Embedded photos of the collections (all of the index when none is named), each once, by id."""
    known = store.collection_names()
    for name in collections:
        if name not in known:
            raise ConfigError(f"no collection {name!r} in the index (collections: {', '.join(known) or 'none yet'})")
    if not collections:
        return store.vector_ids() if include_flagged else _unflagged(store, known)
    return sorted({pid for c in collections for pid in store.vector_ids(c, include_flagged=include_flagged)})


def _unflagged(store: Store, names: Sequence[str]) -> list[int]:
    return sorted({pid for c in names for pid in store.vector_ids(c, include_flagged=False)})


def duplicates(
    store: Store,
    collections: Sequence[str] = (),
    *,
    threshold: str | float = "auto",
    pixel_check: bool = True,
    apply: bool = False,
) -> Duplicates:
    """Duplicate groups among the photos of `collections` (all when empty), flagged ones included (so a rerun
    after apply reports the same groups); apply=True flags the others of each group (a writable store)."""
    from imgidx.search.duplicates import find_duplicates, keep_order
    from imgidx.search.pixels import verifier

    ids = photo_ids(store, collections)
    rows = store.photo_rows(ids)
    colls = store.collections_of(ids)
    facts = [_facts(rows[pid], colls[pid], store.home, read_size=False) for pid in ids]
    vectors = store.vectors(ids)
    stamp = store.stamp
    model = (stamp.model, stamp.layer) if stamp and stamp.weights.startswith("sha256:") else None

    load = file_reader(store.home, rows, ids)
    result = find_duplicates(
        vectors, facts, threshold=threshold, model=model, verify=verifier(load) if pixel_check else None
    )
    # the keep policy wants each member's original size: where the source did not say, read the file's header
    # (only for photos in a group, so this stays cheap on a large index)
    groups = []
    for g in result.groups:
        members = [_facts(rows[pid], colls[pid], store.home, read_size=True) for pid in g.ids]
        ordered = tuple(f.id for f in keep_order(members))
        groups.append(replace(g, keep=ordered[0], ids=ordered))
    result = replace(result, groups=tuple(groups))
    if apply:
        flag_duplicates(store, result)
    return result


def _facts(row, collections: Sequence[str], home: Path, *, read_size: bool) -> PhotoFacts:
    from imgidx.search.duplicates import PhotoFacts

    width, height, size = row["width"], row["height"], None
    path = local_file(home, row["path"]) if read_size and row["path"] else None  # a Path only where it is read
    if path is not None:
        try:
            size = path.stat().st_size
            if not (width and height):
                from PIL import Image

                with Image.open(path) as img:  # the header only
                    width, height = img.size
        except (OSError, ValueError, SyntaxError):  # a missing or odd file: size unknown, ranks last on size
            pass
    return PhotoFacts(
        id=row["id"],
        sha256=row["sha256"],
        width=width,
        height=height,
        size_bytes=size,
        license=row["license"],
        date_upload=row["date_upload"] or "",
        collections=tuple(collections),
    )


def flag_duplicates(store: Store, result: Duplicates) -> int:
    """Flag every non-kept photo of every group on all its memberships; returns how many photos were flagged."""
    dropped = {pid: g for g in result.groups for pid in g.drop}
    memberships = store.collections_of(list(dropped))
    by_collection: dict[str, dict[int, dict]] = {}
    for pid, g in dropped.items():
        for name in memberships[pid]:
            by_collection.setdefault(name, {})[pid] = _reason(g)
    for name, info in by_collection.items():
        store.set_flags(name, info, set(info))
    return len(dropped)


def _reason(g: DuplicateGroup) -> dict:
    return {
        "reason": f"duplicate of {g.keep}",
        "duplicate_of": g.keep,
        "kind": g.kind,
        "max_distance": round(g.max_distance, 6),
    }


def undo_duplicates(store: Store, collections: Sequence[str] = ()) -> int:
    """Unflag the photos apply flagged as duplicates (clean's own flags stay); returns memberships unflagged."""
    return store.clear_duplicate_flags(collections)


def export_collections(
    store: Store,
    out: Path,
    collections: Sequence[str] = (),
    *,
    format: str = "imagefolder",
    split: str | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    licenses: Sequence[int] | None = None,
    include_flagged: bool = False,
    threshold: str | float = "auto",
    version: str = __version__,
    embed: bool = True,
    shard_size: int | None = None,
    command: str = "",
) -> ExportResult:
    """Export the photos of `collections` (all when empty), flagged ones left out unless include_flagged; the
    duplicate groups (computed here) keep every copy of a picture in one split. embed: parquet holds the image
    bytes; shard_size: webdataset samples per shard at most; command: what made it, for the dataset card (by
    default the Python call with these arguments)."""
    from imgidx.search.export import SHARD_SIZE, export

    names = list(collections) or store.collection_names()
    photo_ids(store, names)  # unknown names: one error listing the known ones
    members = {c: store.vector_ids(c, include_flagged=include_flagged) for c in names}
    ids = sorted({pid for pids in members.values() for pid in pids})
    rows = store.photo_rows(ids)
    if licenses is not None:
        allowed = set(licenses)
        ids = [pid for pid in ids if rows[pid]["license"] in allowed]
    matrix = store.vectors(ids) if ids else None
    vectors = dict(zip(ids, matrix, strict=True)) if ids else {}
    groups = _groups(store, ids, rows, matrix, threshold)
    photos = []
    for name, pids in members.items():
        for pid in pids:
            if pid in vectors:
                photos.append(_export_photo(store.home, rows[pid], name, vectors[pid], groups.get(pid)))
    filters = {
        "collections": names,
        "license": sorted(licenses) if licenses is not None else None,
        "include_flagged": include_flagged,
        "duplicates_threshold": threshold,
    }
    model = store.stamp.as_dict() if store.stamp else {}
    if not command:
        args = {"format": format, "split": split, "seed": seed, "licenses": licenses}
        args |= {"include_flagged": include_flagged, "threshold": threshold, "embed": embed, "shard_size": shard_size}
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        command = f"imgidx.open(HOME).export({str(out)!r}, {list(collections)!r}, {shown})"
    return export(
        photos,
        out,
        format=format,
        split=split,
        seed=seed,
        model=model,
        filters=filters,
        version=version,
        embed=embed,
        shard_size=shard_size or SHARD_SIZE,
        command=command,
    )


def _groups(store: Store, ids, rows, vectors, threshold) -> dict[int, int]:
    """vectors: the rows of `ids`, in that order (as store.vectors returns them)."""
    from imgidx.search.duplicates import PhotoFacts, find_duplicates
    from imgidx.search.pixels import verifier

    if len(ids) < 2:
        return {}
    stamp = store.stamp
    model = (stamp.model, stamp.layer) if stamp and stamp.weights.startswith("sha256:") else None
    facts = [PhotoFacts(id=pid, sha256=rows[pid]["sha256"]) for pid in ids]

    load = file_reader(store.home, rows, ids)
    found = find_duplicates(vectors, facts, threshold=threshold, model=model, verify=verifier(load))
    return {pid: min(g.ids) for g in found.groups for pid in g.ids}


def _export_photo(home: Path, row, label: str, vector, group: int | None) -> ExportPhoto:
    from imgidx.search.export import ExportPhoto

    return ExportPhoto(
        id=row["id"],
        label=label,
        path=local_file(home, row["path"]),
        vector=vector,
        group=group,
        source=row["source"],
        source_id=row["source_id"],
        title=row["title"],
        owner=row["owner"],
        owner_name=row["owner_name"],
        license=row["license"],
        page_url=row["page_url"],
        width=row["width"],
        height=row["height"],
        sha256=row["sha256"] or "",
        date_upload=row["date_upload"] or "",
        date_taken=row["date_taken"] or "",
        tags=tuple((row["tags"] or "").split()),
    )


def file_reader(home: Path, rows: dict, ids: Sequence[int]) -> Callable[[int], bytes | None]:
    """bytes of the photo at position `row` of `ids` (for the pixel check); None when its file is gone."""

    def load(row: int) -> bytes | None:
        path = rows[ids[row]]["path"]
        try:
            return local_file(home, path).read_bytes() if path else None
        except OSError:
            return None

    return load
