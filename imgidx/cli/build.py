"""`imgidx build`: parse options -> Settings -> build the parts -> ingest() -> report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.indexer.compose import build_lock, calibration_photos, make_embedder, make_fetcher, make_flickr_client
from imgidx.indexer.config import Settings
from imgidx.indexer.embedders import extend_precision
from imgidx.indexer.errors import ConfigError, StoreError
from imgidx.indexer.records import Photo
from imgidx.indexer.sources import Source
from imgidx.indexer.sources.flickr import SIZE_LETTERS, SORTS, FlickrSource
from imgidx.indexer.sources.folder import FolderSource
from imgidx.indexer.sources.urllist import UrlListSource
from imgidx.indexer.store import DB_NAME, Store

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
            "for a new index bf16 on CPUs with AMX-BF16, else fp32 (recorded in the stamp)."
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
        int | None, typer.Option("--batch-size", help="Photos per model call (default 64 on CPU, 128 on a GPU).")
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Search Flickr (or read a folder, or a list of URLs), download, embed with VGG16 and add to the index."""
    from imgidx.indexer.pipeline import (
        ingest,  # here, not at the top: commands that need no network start faster (~0.2 s)
    )

    settings: Settings = ctx.obj.with_options(download_deadline=timeout, flickr_calls_per_hour=calls_per_hour)
    if sum(map(bool, (queries, from_dir, from_urls))) != 1:
        raise ConfigError(
            "give Flickr queries (imgidx build cat dog), --from-dir PATH or --from-urls FILE: one of them"
        )
    if as_name and queries and len(queries) > 1:
        raise ConfigError("--as names one collection: use it with a single query")
    source = _source(settings, queries, from_dir, from_urls, as_name, count, sort, license, size)
    index_precision = _index_precision(settings.home)  # keep adding in the precision it was built with
    if index_precision:  # unless this CPU only emulates it (bf16 without AMX): then only when asked explicitly
        precision = extend_precision(index_precision, precision)
    fetcher = make_fetcher(settings, workers)
    opened: list[Store] = []  # int8 calibrates on the index's first photos, once the store below holds them
    embedder = make_embedder(
        settings,
        layer,
        weights or settings.weights,
        precision=precision,
        batch_size=batch_size,
        runtime=runtime,
        calibration=lambda: calibration_photos(opened[0], fetcher),
    )
    with build_lock(settings.home), Store(settings.home) as store:
        opened.append(store)
        store.remove_stale_temp_files()  # left by a killed build; we hold the lock, so nobody is writing them
        store.ensure_stamp(embedder.stamp)
        if embedder.weights.path:
            store.set_meta("weights_source", str(embedder.weights.path.resolve()))
        ids = store.add_photos(_photos(source, from_dir or from_urls))
        with console.progress("embedding", len(store.pending(ids, retry_failed=retry_failed))) as advance:
            report = ingest(
                store,
                ids,
                embedder,
                fetcher,
                retry_failed=retry_failed,
                workers=workers if not from_dir else min(workers, 4),  # local reads
                save_every=settings.save_every,
                decode_workers=decode_workers,
                on_progress=advance,
            )
        counts = store.counts()
    if as_json:
        console.print_json({**report.as_dict(), "index": counts})
        return
    for pid, source_id, reason in report.skipped[:20]:
        console.err.print(f"skipping {source_id} (id {pid}): {reason}", markup=False, highlight=False, soft_wrap=True)
    if len(report.skipped) > 20:
        console.err.print(f"... and {len(report.skipped) - 20} more: see `imgidx info --failures`")
    d = report.as_dict()
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
            ("index size", counts["photos"]),
        ],
    )


def _index_precision(home: Path) -> str | None:
    """The precision an existing index was built with; None for a new home, or one a killed first build left
    without a schema (the build below creates it)."""
    if not (home / DB_NAME).exists():
        return None
    try:
        with Store(home, readonly=True) as store:
            return store.stamp.precision if store.stamp else None
    except StoreError:
        return None


def _source(
    settings: Settings,
    queries: list[str] | None,
    from_dir: Path | None,
    from_urls: Path | None,
    as_name: str | None,
    count: int,
    sort: str,
    license: str | None,
    size: str,
) -> Source:
    if from_dir:
        try:
            return FolderSource(from_dir, as_name=as_name)
        except ConfigError as e:
            raise ConfigError(f"--from-dir {e}") from None
    if from_urls:
        return UrlListSource(from_urls, as_name=as_name)

    def said(text: str, found: int) -> None:
        console.err.print(f"flickr: {found} photos for {text!r} (sort {sort})", highlight=False)

    return FlickrSource(
        queries or [],
        count=count,
        sort=sort,
        license=license,
        size=size,
        as_name=as_name,
        client=make_flickr_client(settings),
        on_query=said,
    )


def _photos(source: Source, local: Path | None) -> list[Photo]:
    photos = list(source.photos())
    if not photos and isinstance(source, FolderSource):
        raise ConfigError(f"no image files (.jpg .png .gif .webp .bmp .tif) under {local}")
    if not photos and isinstance(source, UrlListSource):
        raise ConfigError(f"no http(s) URLs in {local}")
    return photos
