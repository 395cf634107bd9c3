"""`imgidx train` and `imgidx classify`: a linear classifier on stored vectors, labels = collection names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgidx.index import Index
from imgidx.indexer.errors import ConfigError

from . import console


@console.handle_errors
def train(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name to save the classifier under.")],
    collections: Annotated[list[str], typer.Argument(help="Two or more collections; their names are the labels.")],
    model: Annotated[str, typer.Option(help="logistic | linear-svm | svm-rbf (the seed's SVC).")] = "logistic",
    test_size: Annotated[float, typer.Option(help="Held-out share for the evaluation.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed of the split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Train, evaluate on a held-out split, and save a classifier stamped with the index's model."""
    if len(set(collections)) < 2:
        raise ConfigError("train needs at least two different collections, e.g. `imgidx train pets cat dog`")
    report = Index(settings=ctx.obj).train(name, collections, model=model, test_size=test_size, seed=seed)
    result = report.as_dict()
    if as_json:
        console.print_json(result)
        return
    console.print_table(
        f"{name}: {model}, held-out accuracy {report.accuracy:.4f} on {report.n_test} photos "
        f"(trained on {report.n_train}); saved to {report.path}",
        ["class", "precision", "recall", "support"],
        [(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", v["support"]) for c, v in result["per_class"].items()],
    )
    console.print_table(
        "confusion (rows: true, columns: predicted)",
        ["true", *report.classes],
        [(c, *row) for c, row in zip(report.classes, report.confusion, strict=True)],
    )
    if report.misclassified:
        console.print_table(
            "misclassified",
            ["id", "true", "predicted", "p", "title", "path"],
            [(m.id, m.true, m.predicted, m.probability, m.title[:30], m.path) for m in report.misclassified],
        )


@console.handle_errors
def classify(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A classifier saved by `imgidx train`.")],
    photos: Annotated[list[Path] | None, typer.Argument(help="Photo files to classify.")] = None,
    collection: Annotated[str | None, typer.Option("--in", help="Classify a whole collection instead.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="With --in: store the predictions in metadata.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predict a label and its probability for photo files or a whole collection."""
    if bool(photos) == bool(collection):
        raise ConfigError("give photo files or --in COLLECTION (not both)")
    if apply and not collection:
        raise ConfigError("--apply stores predictions of indexed photos: use it with --in COLLECTION")
    predictions = Index(settings=ctx.obj).classify(name, photos or None, collection=collection, apply=apply)
    if as_json:
        console.print_json({"classifier": name, "predictions": [p.as_dict() for p in predictions]})
        return
    console.print_table(
        f"{name}: {len(predictions)} predictions{' (stored)' if apply else ''}",
        ["photo", "label", "probability"],
        [(p.path or p.id, p.label, f"{p.probability:.3f}") for p in predictions],
    )
