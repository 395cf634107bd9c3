"""`imgidx build`: parse options -> a source -> Index.build -> report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer.config import Settings
from imgidx.indexer.engines.ray_cluster import INSTALL, RayMissing, import_ray
from imgidx.indexer.errors import ConfigError
from imgidx.indexer.sources.flickr import SIZE_LETTERS, SORTS
from imgidx.results import BuildReport

from . import console


@console.handle_errors
def build(
    ctx: typer.Context,
    queries: Annotated[list[str] | None, typer.Argument(help="Flickr search texts, one collection each.")] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from-dir", help="Index a local folder instead of Flickr; first-level sub-folders become collections."
        ),
    ] = None,
    from_urls: Annotated[
        Path | None,
        typer.Option(
            "--from-urls",
            help="Index a CSV/Parquet list of photo URLs (columns: url, and any of id, title, owner, license, "
            "page_url, caption, collection); collection from its column, else --as, else the file name.",
        ),
    ] = None,
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="Collection name (one query, a folder's top level files, or a URL list's rows)."),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Photos per query (Flickr serves at most 4,000).")] = 100,
    sort: Annotated[str, typer.Option(help=f"Flickr order: {'|'.join(SORTS)}.")] = "relevance",
    license: Annotated[
        str | None, typer.Option("--license", help="Comma-separated Flickr licence ids, e.g. 4,5,9,10 (see README).")
    ] = None,
    size: Annotated[
        str,
        typer.Option(
            help=f"Flickr size to fetch: {' '.join(SIZE_LETTERS)} (z = 640 px; falls "
            "back to the nearest larger, else the largest)."
        ),
    ] = "z",
    layer: Annotated[str, typer.Option(help="fc2 (4096-d) or block5_pool (512-d, averaged).")] = "fc2",
    weights: Annotated[
        str | None, typer.Option(help="imagenet | random[:SEED] (tests only) | PATH. Env IMGIDX_WEIGHTS.")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Model compute precision: fp32|bf16|fp16|int8 (int8: ONNX Runtime). Default: the index's own; "
            "for a new index the fastest that keeps quality on this CPU: bf16 with AMX-BF16, int8 with VNNI, bf16 "
            "with AVX512_BF16, else fp32 (README 'Precision by CPU kind'; recorded in the stamp)."
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="keras|onnx|auto: what runs the model. auto (default; env IMGIDX_RUNTIME): the faster on this "
            "machine, measured once and remembered. Not in the stamp: both give the same vectors."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="Photos per model call (default 64 on CPU, 128 on a GPU); 32 needs less memory (see README).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Concurrent downloads (folders: file readers).")] = 16,
    decode_workers: Annotated[
        int | None, typer.Option("--decode-workers", help="Decode threads (default: one per CPU core).")
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Retry photos that failed with a retryable error (network, timeouts)."),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Seconds one download may take in all (env IMGIDX_DOWNLOAD_DEADLINE, default 60)."
        ),
    ] = None,
    calls_per_hour: Annotated[
        int | None,
        typer.Option("--calls-per-hour", help="Flickr API call budget (env IMGIDX_FLICKR_CALLS_PER_HOUR, 3600)."),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local|ray: what runs download, decode and the model. ray: a Ray Data pipeline (local Ray with "
            "this machine's cores, or --ray-address); needs pip install 'imgidx[ray]'. Same index either way."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Join this Ray cluster (e.g. ray://head:10001 or auto); with --engine ray."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Search Flickr (or read a folder, or a list of URLs), download, embed with VGG16 and add to the index."""
    from imgidx.sources import Flickr, Folder, UrlList

    settings: Settings = ctx.obj.with_options(download_deadline=timeout, flickr_calls_per_hour=calls_per_hour)
    if sum(map(bool, (queries, from_dir, from_urls))) != 1:
        raise ConfigError(
            "give Flickr queries (imgidx build cat dog), --from-dir PATH or --from-urls FILE: one of them"
        )
    if ray_address is not None and engine != "ray":
        raise ConfigError("--ray-address joins a Ray cluster for --engine ray: add --engine ray")
    if engine == "ray":
        try:
            import_ray()  # before any Flickr call
        except RayMissing:
            raise ConfigError(f"--engine ray needs Ray, which is not installed here: {INSTALL}") from None
    if as_name and queries and len(queries) > 1:
        raise ConfigError("--as names one collection: use it with a single query")
    if from_dir:
        source = Folder(from_dir, as_name=as_name)
    elif from_urls:
        source = UrlList(from_urls, as_name=as_name)
    else:

        def found(text: str, n: int) -> None:
            console.err.print(f"flickr: {n} photos for {text!r} (sort {sort})", highlight=False)

        def waiting(seconds: float) -> None:
            console.err.print(
                f"flickr: call budget of {settings.flickr_calls_per_hour} per {settings.flickr_budget_window:g} s "
                f"reached; waiting {seconds:.1f} s",
                highlight=False,
            )

        source = Flickr(
            queries or [],
            count=count,
            sort=sort,
            license=license,
            size=size,
            as_name=as_name,
            settings=settings,
            on_query=found,
            on_wait=waiting,
        )
    with console.progress_bar("embedding") as on_progress:
        report = Index(settings=settings).build(
            source,
            layer=layer,
            weights=weights or settings.weights,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            decode_workers=decode_workers,
            retry_failed=retry_failed,
            on_progress=on_progress,
            runtime=runtime,
            engine=engine,
            ray_address=ray_address,
        )
    d = report.as_dict()
    for note in report.notes:  # stderr, so that --json stays one document
        console.err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        console.print_json(d)
        _exit_if_all_failed(report)
        return
    for f in report.failures[:20]:
        console.err.print(
            f"skipping {f.source_id} (id {f.id}): {f.reason}", markup=False, highlight=False, soft_wrap=True
        )
    if report.skipped > 20:
        console.err.print(f"... and {report.skipped - 20} more: see `imgidx info --failures`")
    console.print_table(
        "build",
        ["what", "count"],
        [
            ("photos requested", d["requested"]),
            ("already indexed", d["already_indexed"]),
            ("failed before (--retry-failed retries)", d["failed_before"]),
            ("newly embedded", d["embedded"]),
            ("reused (identical bytes)", d["reused"]),
            ("skipped (see info --failures)", d["skipped"]),
            ("seconds", d["seconds"]),
            ("photos/s", d["photos_per_second"]),
            ("index size", d["index"]["photos"]),
        ],
    )
    _exit_if_all_failed(report)


def _exit_if_all_failed(report: BuildReport) -> None:
    """A run that tried photos and indexed none is a failure for scripts too (exit 1), with its summary."""
    if report.all_failed:
        console.err.print(
            f"error: {report.summary}; see `imgidx info --failures`, fix the input and run the build again",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
