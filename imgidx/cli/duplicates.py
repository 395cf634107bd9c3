"""`imgidx duplicates`: groups of photos that are the same picture, and --apply to flag all but one of each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError

from . import console


@console.handle_errors
def duplicates(
    ctx: typer.Context,
    collections: Annotated[
        list[str] | None, typer.Argument(help="Collections to look in (default: the whole index).")
    ] = None,
    threshold: Annotated[
        str,
        typer.Option(
            help="'auto' (calibrated for the index's model, else from its nearest-neighbour distances) or a cosine "
            "distance; pairs up to 3x it are grouped when their pixels align (under it, without the pixel check)."
        ),
    ] = "auto",
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Flag every photo but the kept one of each group, on all its collections (reversible with "
            "--undo): flagged photos leave `similar --in`, `train` and `export`.",
        ),
    ] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Remove the duplicate flags (clean's flags stay).")] = False,
    pixel_check: Annotated[
        bool, typer.Option("--pixel-check/--no-pixel-check", help="Confirm borderline pairs on the pixels.")
    ] = True,
    sheet: Annotated[Path | None, typer.Option(help="Write an HTML contact sheet of the groups.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find the same picture stored more than once: identical bytes or pixels (exact), or re-encoded, resized,
    slightly cropped, watermarked or colour-tweaked copies (near); different shots of one scene stay apart.

    Keep policy per group: the largest original (pixels, then bytes), then the most permissive licence (CC0 and
    public domain, CC BY, BY-SA, BY-NC, BY-NC-SA, BY-ND, BY-NC-ND, all rights reserved), then the earliest upload,
    then the lowest id. Horizontal mirror images count as different pictures."""
    settings: Settings = ctx.obj
    names = list(collections or [])
    if apply and undo:
        raise ConfigError("--apply and --undo exclude each other")
    idx = Index(settings=settings)
    if undo:
        n = idx.undo_duplicates(names)
        typer.echo(f"removed the duplicate flags of {n} memberships", err=True)
        return
    result = idx.duplicates(
        names,
        threshold=console.parse_threshold(threshold, "a cosine distance such as 0.05"),
        apply=apply,
        pixel_check=pixel_check,
    )
    flagged = len(result.dropped) if apply else 0
    titles = {p.id: p.title for p in idx.describe([g.keep for g in result.groups])}
    if sheet:
        path = _sheet(idx, sheet, result)
        typer.echo(f"contact sheet: {path}", err=True)
    if as_json:
        console.print_json({**result.as_dict(), "applied": apply, "flagged": flagged})
        return
    console.print_table(
        f"{len(result.groups)} duplicate groups among {result.photos} photos, {len(result.dropped)} to drop "
        f"(cut {result.threshold:.3f}, {result.rule}){' — flags stored' if apply else ''}",
        ["kind", "keep", "others", "max distance", "collections", "title"],
        [
            (
                g.kind,
                g.keep,
                " ".join(str(i) for i in g.drop),
                f"{g.max_distance:.4f}",
                " ".join(g.collections),
                titles.get(g.keep, "")[:40],
            )
            for g in result.groups
        ],
    )


def _sheet(idx: Index, path: Path, result) -> Path:
    from imgidx.search.sheet import contact_sheet

    meta = {n.id: n.as_dict() for n in idx.describe([pid for g in result.groups for pid in g.ids])}
    items = []
    for n, g in enumerate(result.groups, start=1):
        for pid in g.ids:
            dropped = pid != g.keep
            reason = f"group {n} ({g.kind}): duplicate of {g.keep}" if dropped else f"group {n} ({g.kind}): kept"
            items.append({**meta[pid], "rank": n, "flagged": dropped, "reason": reason})
    return contact_sheet(items, "imgidx duplicates", path)
