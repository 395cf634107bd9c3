"""`imgidx train` and `imgidx classify`: a linear classifier on stored vectors, labels = collection names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError, StampMismatch
from imgidx.indexer.store import Store
from imgidx.search.inputs import read_photo
from imgidx.search.knn import describe, member_ids

from . import console
from .clean import labelled_ids

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def classifier_path(home: Path, name: str) -> Path:
    """Classifiers live next to the index, named by the user; the name never becomes a path elsewhere."""
    if not NAME_RE.match(name) or name.startswith("."):
        raise ConfigError(f"classifier names use letters, digits, '_', '-' and '.'; received {name!r}")
    return Path(home) / "classifiers" / f"{name}.joblib"


def load_classifier(store: Store, name: str):
    from imgidx.search.classifier import LinearClassifier
    from imgidx.search.classifier import StampMismatch as ModelStampMismatch

    path = classifier_path(store.home, name)
    if not path.exists():
        raise ConfigError(f"no classifier {name!r} in {path.parent}; train one with `imgidx train {name} A B`")
    model = LinearClassifier.load(path)
    try:
        model.check_stamp(store.stamp.as_dict() if store.stamp else {})
    except ModelStampMismatch as e:
        raise StampMismatch(f"classifier {name!r} was trained on other vectors: {e}") from None
    return model


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
    from imgidx.search.classifier import train_classifier

    settings: Settings = ctx.obj
    if len(set(collections)) < 2:
        raise ConfigError("train needs at least two different collections, e.g. `imgidx train pets cat dog`")
    path = classifier_path(settings.home, name)
    with Store(settings.home, readonly=True) as store:
        ids, labels = labelled_ids(store, collections)
        try:
            report = train_classifier(store.vectors(ids), labels, model=model, test_size=test_size, seed=seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        report.classifier.save(path, store.stamp.as_dict())
        wrong = describe(store, [(ids[m.index], m.probability) for m in report.misclassified])
    misclassified = [
        {
            "id": w["id"],
            "source_id": w["source_id"],
            "true": m.true,
            "predicted": m.predicted,
            "probability": round(float(m.probability), 4),
            "title": w["title"],
            "path": w["path"],
        }
        for w, m in zip(wrong, report.misclassified, strict=True)
    ]
    result = {
        "name": name,
        "path": str(path),
        "model": model,
        "classes": list(report.classes),
        "accuracy": round(float(report.accuracy), 4),
        "n_train": report.n_train,
        "n_test": report.n_test,
        "per_class": {
            c: {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "support": s.support}
            for c, s in report.per_class.items()
        },
        "confusion": report.confusion,
        "misclassified": [m["id"] for m in misclassified],
        "misclassified_photos": misclassified,
    }
    if as_json:
        console.print_json(result)
        return
    console.print_table(
        f"{name}: {model}, held-out accuracy {result['accuracy']:.4f} on {report.n_test} photos "
        f"(trained on {report.n_train}); saved to {path}",
        ["class", "precision", "recall", "support"],
        [(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", v["support"]) for c, v in result["per_class"].items()],
    )
    console.print_table(
        "confusion (rows: true, columns: predicted)",
        ["true", *report.classes],
        [(c, *row) for c, row in zip(report.classes, report.confusion, strict=True)],
    )
    if misclassified:
        console.print_table(
            "misclassified",
            ["id", "true", "predicted", "p", "title", "path"],
            [(m["id"], m["true"], m["predicted"], m["probability"], m["title"][:30], m["path"]) for m in misclassified],
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
    settings: Settings = ctx.obj
    if bool(photos) == bool(collection):
        raise ConfigError("give photo files or --in COLLECTION (not both)")
    if apply and not collection:
        raise ConfigError("--apply stores predictions of indexed photos: use it with --in COLLECTION")
    with Store(settings.home, readonly=not apply) as store:
        model = load_classifier(store, name)
        if collection:
            ids = member_ids(store, collection, include_flagged=True)
            keys: list[dict] = [{"id": pid} for pid in ids]
            vectors = store.vectors(ids)
        else:
            keys, vectors = _embed_files(store, settings, photos or [])
        labels, probs = model.predict(vectors) if len(vectors) else ([], [])
        if apply:
            store.save_predictions(
                name, [(k["id"], str(lab), float(p)) for k, lab, p in zip(keys, labels, probs, strict=True)]
            )
    predictions = [
        {**k, "label": str(lab), "probability": round(float(p), 4)}
        for k, lab, p in zip(keys, labels, probs, strict=True)
    ]
    if as_json:
        console.print_json({"classifier": name, "predictions": predictions})
        return
    console.print_table(
        f"{name}: {len(predictions)} predictions{' (stored)' if apply else ''}",
        ["photo", "label", "probability"],
        [(p.get("path") or p.get("id"), p["label"], f"{p['probability']:.3f}") for p in predictions],
    )


def _embed_files(store: Store, settings: Settings, photos: list[Path]) -> tuple[list[dict], np.ndarray]:
    from imgidx.indexer.compose import embedder_for_index

    pixels = [read_photo(photo) for photo in photos]
    embedder = embedder_for_index(store, settings, batch_size=min(32, len(pixels)))
    return [{"path": str(p)} for p in photos], embedder.embed(np.stack(pixels))
