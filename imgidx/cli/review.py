"""`imgidx review`: a person's decisions on a collection's photos, and which photos to decide on next."""

from __future__ import annotations

from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer.errors import ConfigError

from . import console


@console.handle_errors
def review(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="The collection reviewed, e.g. maybe_cat.")],
    ids: Annotated[
        list[int] | None, typer.Argument(help="Photo ids to decide on (with --flag, --keep or --undo).")
    ] = None,
    flag: Annotated[bool, typer.Option("--flag", help="Accept: the photos do not belong in the collection.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Overrule: the photos belong, whatever clean says.")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Withdraw the newest decision on each photo.")] = False,
    reviewer: Annotated[str, typer.Option(help="Who decides (stored with each decision).")] = "anonymous",
    next_n: Annotated[
        int | None,
        typer.Option(
            "--next",
            help="List the N unreviewed photos whose decisions would teach `clean` most (the least certain, "
            "spread over the collection).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Decide on photos of a collection (--flag, --keep, --undo), list what to review next (--next N), or, with
    neither, list the decisions that count now. `imgidx clean` learns from every decision: reviewed photos keep
    theirs, the others are re-judged with what they teach."""
    decisions = [name for name, on in (("flag", flag), ("keep", keep), ("undo", undo)) if on]
    if len(decisions) > 1:
        raise ConfigError("--flag, --keep and --undo exclude each other: give one of them")
    if ids and not decisions:
        raise ConfigError(f"say what to do with photos {ids}: --flag, --keep or --undo")
    if decisions and not ids:
        # a script answering a round with no photo of one kind calls with none: nothing to record, not an error
        if as_json:
            console.print_json({"collection": collection, "reviews": []})
        typer.echo(f"no photo ids given: nothing recorded (e.g. `imgidx review {collection} 12 40 --flag`)", err=True)
        return
    if next_n is not None and (ids or decisions):
        raise ConfigError("--next lists photos to review; record decisions in a separate call")
    if next_n is not None and next_n < 1:
        raise ConfigError(f"--next takes a number of photos >= 1; received {next_n}")
    idx = Index(settings=ctx.obj)
    if next_n is not None:
        queue = idx.review_next(collection, next_n)
        if as_json:
            console.print_json(queue.as_dict())
            return
        console.print_table(
            f"{collection}: review next ({queue.reviewed} reviewed so far)",
            ["id", "now", "p(flag)", "reason", "title", "page"],
            [
                (
                    p.id,
                    "flag" if p.flagged else "keep",
                    f"{p.p_flag:.2f}",
                    p.reason,
                    p.photo.title[:30],
                    p.photo.page_url,
                )
                for p in queue.photos
            ],
        )
        typer.echo(f"then: imgidx review {collection} ID... --flag (or --keep)", err=True)
        return
    if decisions == ["undo"]:
        done = idx.undo_reviews(collection, ids or [])
        rows = [(pid, r) for pid, r in zip(dict.fromkeys(ids or []), done, strict=True)]
        if as_json:
            answers = [{"id": pid, "review": r.as_dict() if r else None} for pid, r in rows]
            console.print_json({"collection": collection, "reviews": answers})
            return
        for pid, r in rows:
            now = f"{r.decision} by {r.reviewer}" if r else "the automatic flag"
            typer.echo(f"photo {pid}: newest decision withdrawn; what counts now: {now}", err=True)
        return
    if decisions:
        done = idx.review_photos(collection, ids or [], decisions[0], reviewer=reviewer)
        if as_json:
            console.print_json({"collection": collection, "reviews": [r.as_dict() for r in done]})
            return
        typer.echo(f"{len(done)} photos of {collection!r}: {decisions[0]} by {done[0].reviewer}", err=True)
        return
    current = idx.reviews(collection)
    if as_json:
        console.print_json({"collection": collection, "reviews": [r.as_dict() for r in current]})
        return
    console.print_table(
        f"{collection}: {len(current)} reviewed photos",
        ["id", "decision", "reviewer", "view", "automatic flag"],
        [(r.photo_id, r.decision, r.reviewer, r.source, "yes" if r.automatic else "") for r in current],
    )
