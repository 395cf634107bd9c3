"""`imgidx clean` and `imgidx audit`: outliers in one collection, label noise across several (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.store import Store
from imgidx.search.knn import describe, member_ids

from . import console


def collection_vectors(store: Store, name: str, *, include_flagged: bool = True) -> tuple[list[int], np.ndarray]:
    ids = member_ids(store, name, include_flagged=include_flagged)
    if not ids:
        raise ConfigError(f"collection {name!r} has no embedded photos yet; run `imgidx build` first")
    return ids, store.vectors(ids)


def parse_threshold(text: str) -> str | float:
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--threshold takes 'auto' or a distance such as 0.8; received {text!r}") from None


@console.handle_errors
def clean(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="The collection to rank, e.g. maybe_cat.")],
    iterations: Annotated[int, typer.Option(help="Centroid re-estimation passes (seed 003 §9.6).")] = 5,
    drop: Annotated[int | None, typer.Option(help="Flag exactly the N farthest (the seed's fixed cut).")] = None,
    threshold: Annotated[str, typer.Option(help="'auto' (median + 3 MAD of distances) or a distance.")] = "auto",
    against: Annotated[str | None, typer.Option(help="Measure distance to this collection's robust centroid.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="'auto': also use the index's other collections and a saved classifier when there are any "
            "(nearer another collection's centre and most of the 10 nearest photos in it, the classifier says "
            "another label, or far from everything); 'centroid': the seed's loop alone."
        ),
    ] = "auto",
    classifier: Annotated[
        str, typer.Option(help="'auto' (a saved classifier with this collection's label), 'none', or a name.")
    ] = "auto",
    apply: Annotated[
        bool,
        typer.Option(
            "--apply", help="Store the flags: flagged photos leave `similar --in`, training and clean counts."
        ),
    ] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Remove the stored flags of this collection.")] = False,
    sheet: Annotated[
        Path | None, typer.Option(help="Write an HTML contact sheet (central first, outliers last).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rank a collection from typical to outlier and flag the outliers, saying why.

    Uses the index's other collections and a saved classifier when there are any; else (or with --method
    centroid) the distance to an iteratively re-estimated centroid with a median + 3 MAD cut (seed 003 §9.6)."""
    from imgidx.search.outliers import index_inputs, rank_outliers

    from .train import load_classifier  # train imports this module

    settings: Settings = ctx.obj
    if apply and undo:
        raise ConfigError("--apply and --undo exclude each other")
    if drop is not None and threshold != "auto":
        raise ConfigError("--drop and --threshold exclude each other")
    if method not in ("auto", "centroid"):
        raise ConfigError(f"--method takes 'auto' or 'centroid'; received {method!r}")
    with Store(settings.home, readonly=not (apply or undo)) as store:
        if undo:
            n = store.clear_flags(collection)
            typer.echo(f"removed the clean flags of {n} photos in {collection!r}", err=True)
            return
        ids, vectors = collection_vectors(store, collection)
        reference = collection_vectors(store, against, include_flagged=False)[1] if against else None
        # The index's other collections and a classifier (search/outliers.py), unless the seed's loop is asked for.
        model = "auto" if classifier == "auto" else None if classifier == "none" else load_classifier(store, classifier)
        extra = index_inputs(store, collection, classifier=model) if method == "auto" else {}
        try:
            result = rank_outliers(
                vectors,
                iterations=iterations,
                drop=drop,
                threshold=parse_threshold(threshold),
                reference=reference,
                **extra,
            )
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
        rows = _rows(store, ids, result)
        if apply:
            info = {r["id"]: {k: r[k] for k in ("distance", "z", "iteration")} for r in rows}
            store.set_flags(collection, info, {r["id"] for r in rows if r["flagged"]})
    if sheet:
        path = _sheet(sheet, collection, rows)
        typer.echo(f"contact sheet: {path}", err=True)
    if as_json:
        console.print_json(
            {
                "collection": collection,
                "against": against,
                "iterations_run": result.iterations_run,
                "cutoff": result.cutoff,
                "method": result.method,
                "allies": list(result.allies),
                "rivals": list(result.rivals),
                "classifier_label": result.label,
                "applied": apply,
                "photos": rows,
            }
        )
        return
    flagged = sum(r["flagged"] for r in rows)
    console.print_table(
        f"{collection}: {len(rows)} photos, {flagged} flagged ({result.iterations_run} passes, cut at "
        f"{result.cutoff:.4f}{_compared(result)}){' — flags stored' if apply else ''}",
        ["#", "id", "distance", "z", "flagged", "since pass", "reason", "title", "page"],
        [
            (
                r["rank"],
                r["id"],
                f"{r['distance']:.4f}",
                f"{r['z']:.2f}",
                "yes" if r["flagged"] else "",
                r["iteration"] or "",
                r["reason"],
                r["title"][:40],
                r["page_url"],
            )
            for r in rows
        ],
    )


def _compared(result) -> str:
    parts = [
        f"{label} {', '.join(names)}" for label, names in (("vs", result.rivals), ("with", result.allies)) if names
    ]
    if result.label:
        parts.append(f"classifier label {result.label}")
    return "; " + "; ".join(parts) if parts else ""


def _rows(store: Store, ids: list[int], result) -> list[dict]:
    meta = {h["id"]: h for h in describe(store, [(pid, 0.0) for pid in ids])}
    rows = []
    for rank, i in enumerate(result.order, start=1):
        pid = ids[int(i)]
        m = meta[pid]
        rows.append(
            {
                "rank": rank,
                "id": pid,
                "source_id": m["source_id"],
                "distance": round(float(result.distances[i]), 6),
                "z": round(float(result.z[i]), 3),
                "flagged": bool(result.flagged[i]),
                "iteration": int(result.first_flagged[i]) or None,
                "reason": result.reasons[i],
                "score": round(float(result.score[i]), 4),
                # nearest other collection's centre − own side's centre, and neighbours in other collections
                "margin": None if np.isnan(result.margin[i]) else round(float(result.margin[i]), 6),
                "neighbours_elsewhere": int(result.votes[i]),
                "title": m["title"],
                "page_url": m["page_url"],
                "path": m["path"],
            }
        )
    return rows


def _sheet(path: Path, collection: str, rows: list[dict]) -> Path:
    from imgidx.search.sheet import contact_sheet

    return contact_sheet(rows, f"imgidx clean {collection}", path)  # each row's reason is "" unless flagged


def labelled_ids(store: Store, collections: list[str]) -> tuple[list[int], list[str]]:
    """(ids, labels) of the clean members of `collections`; a photo in two of them is ambiguous and left out."""
    members = {name: member_ids(store, name, include_flagged=False) for name in dict.fromkeys(collections)}
    seen: dict[int, int] = {}
    for ids in members.values():
        for pid in ids:
            seen[pid] = seen.get(pid, 0) + 1
    pairs = [(pid, name) for name, ids in members.items() for pid in ids if seen[pid] == 1]
    return [p for p, _ in pairs], [n for _, n in pairs]


@console.handle_errors
def audit(
    ctx: typer.Context,
    collections: Annotated[list[str], typer.Argument(help="Two or more collections, e.g. cat dog.")],
    k: Annotated[int, typer.Option("-k", help="Neighbours to look at per photo.")] = 10,
    show_all: Annotated[bool, typer.Option("--all", help="List every photo, not only the suspects.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Model-free label-noise check: photos closer to another collection, or whose neighbours are another's."""
    from imgidx.search.audit import audit_labels

    settings: Settings = ctx.obj
    if len(set(collections)) < 2:
        raise ConfigError("audit needs at least two different collections, e.g. `imgidx audit cat dog`")
    with Store(settings.home, readonly=True) as store:
        ids, labels = labelled_ids(store, collections)
        result = audit_labels(store.vectors(ids), labels, k=k)
        meta = {h["id"]: h for h in describe(store, [(pid, 0.0) for pid in set(ids)])}
    photos = [
        {
            "id": ids[p.index],
            "source_id": meta[ids[p.index]]["source_id"],
            "label": p.label,
            "suggested": p.suggested,
            "flagged": p.flagged,
            "margin": round(float(p.margin), 6),
            "agreement": round(float(p.agreement), 3),
            "reasons": list(p.reasons),
            "title": meta[ids[p.index]]["title"],
        }
        for p in (result.photos if show_all else result.suspects)
    ]
    if as_json:
        console.print_json(
            {"collections": collections, "k": result.k, "suspects": len(result.suspects), "photos": photos}
        )
        return
    console.print_table(
        f"audit of {', '.join(collections)}: {len(result.suspects)} suspect labels",
        ["id", "label", "suggested", "margin", "agreement", "reasons", "title"],
        [
            (
                p["id"],
                p["label"],
                p["suggested"],
                f"{p['margin']:.4f}",
                p["agreement"],
                "; ".join(p["reasons"]),
                p["title"][:30],
            )
            for p in photos
        ],
    )
