"""`imgidx export`: the collections as a training job reads them, with attribution and a manifest."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer.config import Settings
from imgidx.indexer.licenses import parse_license_ids

from . import console


@console.handle_errors
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Folder to write (new, empty, or an earlier export).")],
    collections: Annotated[list[str] | None, typer.Argument(help="Collections = labels (default: all).")] = None,
    format: Annotated[  # noqa: A002 - the option's name
        str, typer.Option("--format", help="imagefolder (DIR/<split>/<label>/), parquet or webdataset (tar shards).")
    ] = "imagefolder",
    split: Annotated[str, typer.Option(help="train[,val],test fractions, stratified per label.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of the split (and of the shard order).")] = 0,
    license: Annotated[  # noqa: A002
        str | None, typer.Option("--license", help="Only these Flickr licence ids, e.g. 4,5,9,10.")
    ] = None,
    include_flagged: Annotated[
        bool, typer.Option("--include-flagged", help="Also photos flagged by clean or duplicates --apply.")
    ] = False,
    threshold: Annotated[
        str, typer.Option(help="Duplicate cut that keeps copies in one split ('auto' or a cosine distance).")
    ] = "auto",
    embed: Annotated[
        bool,
        typer.Option(
            "--embed/--no-embed",
            help="parquet: image bytes inside the files (default), or --no-embed: paths to DIR/images/ (huge exports).",
        ),
    ] = True,
    shard_size: Annotated[
        int | None,
        typer.Option(help="webdataset: samples per shard at most (default 1000; at least 8 shards per split)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Write the photos as imagefolder, parquet or webdataset, always with a dataset card (README.md),
    ATTRIBUTION.csv and manifest.json; each loads in one call (Hugging Face datasets, webdataset, Keras, torchvision).

    Two copies of one picture (duplicate groups) never land in different splits; flagged photos are left out
    unless --include-flagged. Files are hard-linked or copied, never re-encoded. Rerunning with the same
    arguments changes nothing; an interrupted export resumes."""
    settings: Settings = ctx.obj
    licenses = parse_license_ids(license) if license else None
    result = Index(settings=settings).export(
        out,
        list(collections or []),
        format=format,
        split=split,
        seed=seed,
        licenses=licenses,
        include_flagged=include_flagged,
        threshold=console.parse_threshold(threshold, "a cosine distance such as 0.05"),
        embed=embed,
        shard_size=shard_size,
        command=_command(out, collections, format, split, seed, license, include_flagged, threshold, embed, shard_size),
    )
    if as_json:
        console.print_json(result.as_dict())
        return
    console.print_table(
        f"{out} ({format}): {result.written} files written, {result.kept} unchanged, {result.removed} removed",
        ["split", "label", "photos"],
        [(s, label, n) for s, labels in result.counts.items() for label, n in labels.items()],
    )


def _command(out, collections, format, split, seed, license, include_flagged, threshold, embed, shard_size) -> str:  # noqa: A002
    """The command line for the dataset card, every choice spelled out (the defaults too)."""
    words = ["imgidx", "export", str(out), *(collections or []), "--format", format, "--split", split]
    words += ["--seed", str(seed), "--threshold", threshold]
    words += ["--license", license] if license else []
    words += ["--include-flagged"] if include_flagged else []
    words += ["--no-embed"] if format == "parquet" and not embed else []
    words += ["--shard-size", str(shard_size)] if format == "webdataset" and shard_size else []
    return shlex.join(words)
