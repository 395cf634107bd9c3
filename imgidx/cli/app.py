"""The `imgidx` command. Thin commands: parse options, call the library, print a table or --json.

Commands that need no model (info, reindex, ...) never import TensorFlow, so they start fast
(tests/test_startup.py checks it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from imgidx.indexer import ann
from imgidx.indexer.compose import build_lock, build_running, embedder_for_index
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError, ImgidxError, StoreError
from imgidx.indexer.store import DB_NAME, Store
from imgidx.search.inputs import read_photo
from imgidx.search.knn import nearest

from . import console
from .build import build
from .clean import audit, clean
from .serve import serve
from .train import classify, train
from .vision import activations, labels

app = typer.Typer(
    name="imgidx",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Image-embedding index: Flickr or a folder -> VGG16 fc2 -> FAISS + SQLite.",
)


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option("--home", help="Data home (env IMGIDX_HOME, default ./data).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens to stderr.")] = False,
) -> None:
    try:
        settings = Settings.from_env().with_options(home=home)
    except ImgidxError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    console.setup_logging(verbose, secrets=[settings.flickr_secret])
    ctx.obj = settings


app.command()(build)
for command in (clean, audit, train, classify, activations, labels):
    app.command()(command)
app.command()(serve)


@app.command()
@console.handle_errors
def similar(
    ctx: typer.Context,
    photo: Annotated[Path | None, typer.Argument(help="A photo file to find neighbours of.")] = None,
    photo_id: Annotated[int | None, typer.Option("--id", help="Use an indexed photo (its integer id).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many neighbours.")] = 10,
    collection: Annotated[str | None, typer.Option("--in", help="Only this collection.")] = None,
    include_flagged: Annotated[
        bool, typer.Option("--include-flagged", help="Also return photos that `clean --apply` flagged.")
    ] = False,
    layer: Annotated[str | None, typer.Option(help="Must match the index (default: the index's own).")] = None,
    weights: Annotated[str | None, typer.Option(help="Must match the index (default: the index's own).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Nearest neighbours of a photo, with cosine score and attribution."""
    settings: Settings = ctx.obj
    if (photo is None) == (photo_id is None):
        raise ConfigError("give a photo file or --id N (not both)")
    with Store(settings.home, readonly=True) as store, store.snapshot():
        if photo_id is not None:
            if layer or weights:
                embedder_for_index(store, settings, layer=layer, weights=weights)  # only to check they agree
            if not store.has_vector(photo_id):
                raise ConfigError(f"no indexed photo with id {photo_id}; see `imgidx info` or a --json listing")
            query = store.vectors([photo_id])[0]
        else:
            query = _embed_file(store, settings, photo, layer, weights)
        hits = nearest(store, query, k, collection=collection, include_flagged=include_flagged)
    if as_json:
        console.print_json({"hits": hits})
        return
    console.print_table(
        f"{len(hits)} nearest to {photo or f'id {photo_id}'}",
        ["#", "id", "score", "collections", "title", "owner", "license", "page", "path"],
        [
            (
                i + 1,
                h["id"],
                f"{h['score']:.4f}",
                ",".join(h["collections"]),
                h["title"][:40],
                h["owner"],
                h["license"],
                h["page_url"],
                _short_path(h["path"]),
            )
            for i, h in enumerate(hits)
        ],
    )


def _short_path(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _embed_file(store: Store, settings: Settings, photo: Path, layer: str | None, weights: str | None):
    pixels = read_photo(photo)
    embedder = embedder_for_index(store, settings, layer=layer, weights=weights, batch_size=1)
    return embedder.embed(pixels[None])[0]


@app.command()
@console.handle_errors
def info(
    ctx: typer.Context,
    failures: Annotated[bool, typer.Option("--failures", help="List photos that were skipped, with reasons.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Collections and counts, the model stamp, the index kind and size, failures."""
    settings: Settings = ctx.obj
    with Store(settings.home, readonly=True) as store, store.snapshot():
        counts = store.counts()
        stamp = store.stamp
        report = {
            "home": str(settings.home),
            "photos": counts["photos"],
            "collections": counts["collections"],
            "clean": counts["clean"],
            "stamp": stamp.as_dict() if stamp else None,
            "index": {**ann.describe(store.index), "requested": store.index_kind},
            "states": counts["states"],
            "failures": counts["failures"],
        }
        if failures:
            report["failed"] = [dict(r) for r in store.failures()]
    if as_json:
        console.print_json(report)
        return
    console.print_table(
        f"imgidx index in {settings.home}",
        ["what", "value"],
        [
            ("photos (with vectors)", report["photos"]),
            ("model", stamp.describe() if stamp else "none yet"),
            ("index", _describe_index(report["index"])),
            ("failures", report["failures"]),
        ],
    )
    console.print_table(
        "collections",
        ["collection", "count", "clean (not flagged)"],
        [(name, n, report["clean"][name]) for name, n in sorted(report["collections"].items())],
    )
    if failures:
        console.print_table(
            "failures",
            ["id", "source_id", "reason", "retryable"],
            [(r["id"], r["source_id"], r["error"], "yes" if r["retryable"] else "no") for r in report["failed"]],
        )


@app.command()
@console.handle_errors
def verify(
    ctx: typer.Context,
    repair: Annotated[
        bool, typer.Option("--repair", help="Rebuild what can be rebuilt from the stored vectors and files.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the index against its metadata and files; exit 1 with a report when they disagree."""
    from imgidx.indexer import verify as checks

    settings: Settings = ctx.obj
    if not (settings.home / DB_NAME).exists():
        raise StoreError(f"no index in {settings.home}; build one first with `imgidx build` (or set IMGIDX_HOME)")
    if repair:
        with build_lock(settings.home), Store(settings.home) as store:
            report = checks.verify(store)
            if any(f.error and f.repairable for f in report.findings):
                done = checks.repair(store, report)
                report = checks.verify(store)
                report.repaired = done
    else:
        with Store(settings.home, readonly=True) as store, store.snapshot():
            report = checks.verify(store, build_running=build_running(settings.home))
    _print_verify(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def _print_verify(report, as_json: bool) -> None:
    d = report.as_dict()
    if as_json:
        console.print_json(d)
        return
    for line in d["repaired"]:
        console.err.print(f"repaired: {line}", highlight=False)
    checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in d["checked"].items())
    if not d["problems"]:
        console.out.print(f"ok: index, metadata and files agree ({checked})", highlight=False)
        return
    console.print_table(
        f"verify {d['home']}: {checked}",
        ["severity", "problem", "count", "what", "repairable"],
        [
            (p["severity"], p["kind"], p["count"], p["detail"], "yes" if p["repairable"] else "no")
            for p in d["problems"]
        ],
    )
    if not d["ok"]:
        console.err.print("run `imgidx verify --repair` to fix what can be fixed", highlight=False)


@app.command()
@console.handle_errors
def demo(
    ctx: typer.Context,
    per_family: Annotated[int, typer.Option(help="Generated photos per family.")] = 12,
) -> None:
    """Offline demo: generate photos, index them, show `similar` for a new photo of each family."""
    from imgidx.indexer.embedders.vgg16 import TOP_FILE
    from imgidx.search.demo import generate

    settings: Settings = ctx.obj
    root = settings.home / "demo-photos"
    queries = generate(root, per_family)
    has_imagenet = (settings.keras_home / "models" / TOP_FILE).exists()
    weights = ["--weights", "imagenet"] if has_imagenet else ["--weights", "random:0", "--layer", "block5_pool"]
    if not has_imagenet:
        console.err.print(
            f"demo: no ImageNet weights in {settings.keras_home / 'models'}; using explicitly random "
            "weights (neighbours then reflect texture and colour only)",
            highlight=False,
        )
    console.err.print(f"demo: indexing {len(list(root.rglob('*.jpg')))} generated photos from {root}", highlight=False)
    app(["--home", str(settings.home), "build", "--from-dir", str(root), *weights], standalone_mode=False)
    for q in queries:
        app(["--home", str(settings.home), "similar", str(q), "-k", "5"], standalone_mode=False)


@app.command()
@console.handle_errors
def reindex(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Option(
            help="flat (exact) | ivf | hnsw | auto (flat up to 50k vectors, IVF beyond; the default, and what "
            "later builds keep following).",
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rebuild the FAISS index from the exact stored vectors as another kind (atomic; vectors are untouched)."""
    settings: Settings = ctx.obj
    if kind not in ann.CHOICES:
        raise ConfigError(f"--kind must be one of {'|'.join(ann.CHOICES)}; received {kind!r}")
    Store(settings.home, readonly=True).close()  # a clear error when there is no index yet
    with build_lock(settings.home), Store(settings.home) as store:
        if store.stamp is None:
            raise ConfigError(f"the index in {settings.home} is empty; build it first with `imgidx build`")
        before = ann.describe(store.index)
        start = time.monotonic()
        store.rebuild_index(kind)
        seconds = time.monotonic() - start
        after = ann.describe(store.index)
        recall = ann.recall_at_k(store.index, store.vector_ids(), store.vectors) if after["kind"] != "flat" else 1.0
    report = {"before": before, "after": {**after, "requested": kind}, "recall_at_10": recall, "seconds": seconds}
    if as_json:
        console.print_json(report)
        return
    console.print_table(
        f"reindex {settings.home}",
        ["what", "value"],
        [
            ("before", _describe_index(before)),
            ("after", _describe_index(after)),
            ("recall@10 vs exact (100 stored vectors as queries)", f"{recall:.3f}"),
            ("seconds", f"{seconds:.1f}"),
        ],
    )


def _describe_index(d: dict) -> str:
    extras = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("kind", "size", "requested"))
    text = f"{d['kind']} with {d['size']} vectors" + (f" ({extras})" if extras else "")
    return text + (f"; kind {d['requested']}" if d.get("requested") == "auto" else "")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
