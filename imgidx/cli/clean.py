"""`imgidx clean` and `imgidx audit`: outliers in one collection, label noise across several (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer.errors import ConfigError
from imgidx.results import CleanReport

from . import console


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
            "(most of the 10 nearest photos in another collection and nearer its centre or the classifier agrees, "
            "or far from everything); 'centroid': the seed's loop alone."
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
    use_reviews: Annotated[
        bool,
        typer.Option(
            "--reviews/--no-reviews",
            help="Learn from the collection's reviews (`imgidx review`): reviewed photos keep their decision, the "
            "others are re-judged with what the decisions teach; --no-reviews: the cut alone.",
        ),
    ] = True,
    sheet: Annotated[
        Path | None, typer.Option(help="Write an HTML contact sheet (central first, outliers last).")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every photo in the table, not only the flagged ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (always every photo).")] = False,
) -> None:
    """Rank a collection from typical to outlier and flag the outliers, saying why.

    Uses the index's other collections and a saved classifier when there are any; else (or with --method
    centroid) the distance to an iteratively re-estimated centroid with a median + 3 MAD cut (seed 003 §9.6).
    The table lists the flagged photos, in ranking order (--all: every photo; --json and --sheet always do)."""
    if apply and undo:
        raise ConfigError("--apply and --undo exclude each other")
    if drop is not None and threshold != "auto":
        raise ConfigError("--drop and --threshold exclude each other")
    idx = Index(settings=ctx.obj)
    if undo:
        n = idx.undo_clean(collection)
        typer.echo(f"removed the clean flags of {n} photos in {collection!r}", err=True)
        return
    report = idx.clean(
        collection,
        iterations=iterations,
        drop=drop,
        threshold=console.parse_threshold(threshold, "a distance such as 0.8"),
        against=against,
        apply=apply,
        method=method,
        classifier=None if classifier == "none" else classifier,
        use_reviews=use_reviews,
    )
    if sheet:
        path = _sheet(sheet, report)
        typer.echo(f"contact sheet: {path}", err=True)
    if as_json:
        console.print_json(report.as_dict())
        return
    console.print_table(
        f"{collection}: {len(report.rows)} photos, {len(report.flagged)} flagged ({report.iterations_run} passes, cut "
        f"at {report.cutoff:.4f}{_compared(report)}{_taught(report)}){' — flags stored' if apply else ''}",
        ["#", "id", "distance", "z", "flagged", "since pass", "reason", "title", "page"],
        [
            (
                r.rank,
                r.id,
                f"{r.distance:.4f}",
                f"{r.z:.2f}",
                "yes" if r.flagged else "",
                r.iteration or "",
                r.reason,
                r.photo.title[:40],
                r.photo.page_url,
            )
            for r in (report.rows if show_all else [r for r in report.rows if r.flagged])
        ],
    )
    if not show_all and len(report.flagged) < len(report.rows):
        # thousands of table rows take seconds to lay out, and the photos to look at are the flagged ones
        kept = len(report.rows) - len(report.flagged)
        typer.echo(f"{kept} kept photos not listed: --all lists every photo, --json gives every row", err=True)


def _compared(report: CleanReport) -> str:
    parts = [f"{word} {', '.join(names)}" for word, names in (("vs", report.rivals), ("with", report.allies)) if names]
    if report.classifier_label:
        parts.append(f"classifier label {report.classifier_label}")
    return "; " + "; ".join(parts) if parts else ""


def _taught(report: CleanReport) -> str:
    return f"; taught by {report.reviews} reviews" if report.reviews else ""


def _sheet(path: Path, report: CleanReport) -> Path:
    from imgidx.search.sheet import contact_sheet

    items = [r.as_dict() for r in report.rows]  # each row's reason is "" unless it is flagged
    return contact_sheet(items, f"imgidx clean {report.collection}", path)


@console.handle_errors
def audit(
    ctx: typer.Context,
    collections: Annotated[list[str], typer.Argument(help="Two or more collections, e.g. cat dog.")],
    k: Annotated[int, typer.Option("-k", help="Neighbours to look at per photo.")] = 10,
    show_all: Annotated[bool, typer.Option("--all", help="List every photo, not only the suspects.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Model-free label-noise check: photos closer to another collection, or whose neighbours are another's."""
    if len(set(collections)) < 2:
        raise ConfigError("audit needs at least two different collections, e.g. `imgidx audit cat dog`")
    report = Index(settings=ctx.obj).audit(collections, k=k)
    if as_json:
        console.print_json(report.as_dict(all_photos=show_all))
        return
    console.print_table(
        f"audit of {', '.join(collections)}: {len(report.suspects)} suspect labels",
        ["id", "label", "suggested", "margin", "agreement", "reasons", "title"],
        [
            (p.id, p.label, p.suggested, f"{p.margin:.4f}", p.agreement, "; ".join(p.reasons), p.title[:30])
            for p in (report.photos if show_all else report.suspects)
        ],
    )
