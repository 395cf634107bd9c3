"""The `imgidx` command. Thin commands: parse options, call the library, print a table or --json.

Commands that need no model (info, reindex, ...) never import TensorFlow, so they start fast
(tests/test_startup.py checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer import ann, layout
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError, ImgidxError

from . import console
from .build import build
from .clean import audit, clean
from .duplicates import duplicates
from .export import export
from .review import review
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
app.command()(duplicates)
app.command()(export)
app.command()(review)


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
    if (photo is None) == (photo_id is None):
        raise ConfigError("give a photo file or --id N (not both)")
    idx = Index(settings=_with_weights(ctx.obj, weights))
    if layer or weights:
        idx.embedder(layer=layer, weights=weights, batch_size=1)  # they must agree with the index's stamp
    hits = idx.similar(photo, id=photo_id, k=k, collection=collection, include_flagged=include_flagged)
    if as_json:
        console.print_json({"hits": [h.as_dict() for h in hits]})
        return
    console.print_table(
        f"{len(hits)} nearest to {photo or f'id {photo_id}'}",
        ["#", "id", "score", "collections", "title", "owner", "license", "page", "path"],
        [
            (
                i + 1,
                h.id,
                f"{h.score:.4f}",
                ",".join(h.collections),
                h.title[:40],
                h.owner,
                h.license_name,
                h.page_url,
                _short_path(h.path),
            )
            for i, h in enumerate(hits)
        ],
    )


def _with_weights(settings: Settings, weights: str | None) -> Settings:
    """--weights PATH also tells where the index's own weights file is, when it has moved."""
    return settings.with_options(weights=weights)


def _short_path(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


@app.command()
@console.handle_errors
def info(
    ctx: typer.Context,
    failures: Annotated[bool, typer.Option("--failures", help="List photos that were skipped, with reasons.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Collections and counts, the model stamp, the index kind and size, failures."""
    settings: Settings = ctx.obj
    result = Index(settings=settings).info()
    report = result.as_dict(failures=failures)
    if as_json:
        console.print_json(report)
        return
    console.print_table(
        f"imgidx index in {settings.home}",
        ["what", "value"],
        [
            ("photos (with vectors)", report["photos"]),
            ("model", result.stamp_text or "none yet"),
            ("index", _describe_index(report["index"])),
            *([("int8 calibration", _describe_calibration(c))] if (c := report["int8_calibration"]) else []),
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
    idx = Index(settings=ctx.obj)
    report = idx.repair() if repair else idx.verify()
    _print_verify(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def _describe_calibration(c: dict) -> str:
    return (
        f"{c.get('photos')} photos (pixels sha256 {c.get('pixels_sha256')}), {c.get('when')}, "
        f"{c.get('seconds')} s; reused from the user cache by later builds"
    )


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
    """Demo: generate photos, index them, show `similar` for a new photo of each family.

    Online it fetches the ImageNet block5_pool weights (58 MB) through Keras' cache; offline it falls back to
    explicitly random weights, which show the plumbing only."""
    from imgidx.indexer.embedders.weights import resolve
    from imgidx.search.demo import generate

    settings: Settings = ctx.obj
    root = layout.demo_photos_folder(settings.home)
    queries = generate(root, per_family)
    weights = ["--weights", "imagenet", "--layer", "block5_pool"]
    try:
        resolve("imagenet", "block5_pool", settings.keras_home, settings.weights_url, settings.cache_dir)
    except ConfigError as e:
        console.err.print(f"demo: {e}", highlight=False, markup=False, soft_wrap=True)  # whole, never cut
        console.err.print(
            "demo: so this demo uses explicitly random weights: they show only the plumbing (decode, embed, "
            "index, search); the neighbours and scores below say nothing about the pictures. With the ImageNet "
            "weights in the Keras cache, the same demo shows neighbours that make sense.",
            highlight=False,
            soft_wrap=True,
        )
        weights = ["--weights", "random:0", "--layer", "block5_pool"]
    console.err.print(f"demo: indexing {len(list(root.rglob('*.jpg')))} generated photos from {root}", highlight=False)
    # a small batch: the last, short batch of a build is padded to the batch size
    build_args = ["build", "--from-dir", str(root), *weights, "--batch-size", "8"]
    app(["--home", str(settings.home), *build_args], standalone_mode=False)
    for q in queries:
        app(["--home", str(settings.home), "similar", str(q), "-k", "5"], standalone_mode=False)


@app.command()
@console.handle_errors
def reindex(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Option(
            help="flat (exact) | ivf | ivfpq | hnsw | auto (flat up to 50k vectors, IVF beyond, IVF-PQ past 262k "
            "at 4096-d; the default, and what later builds keep following).",
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rebuild the FAISS index from the exact stored vectors as another kind (atomic; vectors are untouched)."""
    settings: Settings = ctx.obj
    if kind not in ann.CHOICES:
        raise ConfigError(f"--kind must be one of {'|'.join(ann.CHOICES)}; received {kind!r}")
    result = Index(settings=settings).reindex(kind)
    if as_json:
        console.print_json(result.as_dict())
        return
    console.print_table(
        f"reindex {settings.home}",
        ["what", "value"],
        [
            ("before", _describe_index(result.before)),
            ("after", _describe_index(result.after)),
            ("recall@10 vs exact (100 stored vectors as queries)", f"{result.recall_at_10:.3f}"),
            ("seconds", f"{result.seconds:.1f}"),
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
