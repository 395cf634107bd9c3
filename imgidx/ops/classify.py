"""Classifiers on an open Store: train one on the clean members of collections (their names are the labels), and a
saved one's predictions for photos, stored vectors or a collection (stored in the index with save_as)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from imgidx.indexer.errors import InvalidArgument
from imgidx.indexer.store import Store
from imgidx.search.knn import member_ids

from ..results import ClassScore, Misclassification, Prediction, TrainReport
from .queries import (
    Embed,
    PhotoInput,
    check_photo_id,
    describe,
    labelled_ids,
    photo_pixels,
    stored_vectors,
    two_or_more,
)


def train(
    store: Store,
    name: str,
    collections: Sequence[str],
    *,
    model: str = "logistic",
    test_size: float = 0.2,
    seed: int = 0,
) -> TrainReport:
    """Train on the clean members of `collections` (their names are the labels), evaluate on a held-out split,
    save to <home>/classifiers/<name>.joblib stamped with the index's model."""
    from imgidx.search.classifier import classifier_path, train_classifier

    names = two_or_more(collections, "a classifier")
    path = classifier_path(store.home, name)
    ids, labels = labelled_ids(store, names)
    try:
        report = train_classifier(store.vectors(ids), labels, model=model, test_size=test_size, seed=seed)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(str(e)) from None
    report.classifier.save(path, store.stamp.as_dict() if store.stamp else {})
    wrong = describe(store, [(ids[m.index], m.probability) for m in report.misclassified])
    return TrainReport(
        name=name,
        path=str(path),
        model=model,
        classes=tuple(report.classes),
        accuracy=round(float(report.accuracy), 4),
        n_train=report.n_train,
        n_test=report.n_test,
        per_class={
            c: ClassScore(round(s.precision, 4), round(s.recall, 4), s.support) for c, s in report.per_class.items()
        },
        confusion=tuple(tuple(row) for row in report.confusion),
        misclassified=tuple(
            Misclassification(w.id, w.source_id, m.true, m.predicted, round(float(m.probability), 4), w.title, w.path)
            for w, m in zip(wrong, report.misclassified, strict=True)
        ),
    )


def predict(model, vectors: npt.NDArray[np.float32], keys: Sequence[dict[str, Any]]) -> list[Prediction]:
    """A classifier's label and probability per vector, each with its key (id=... or path=...)."""
    labels, probs = model.predict(vectors) if len(vectors) else ([], [])
    return [Prediction(str(lab), float(p), **key) for key, lab, p in zip(keys, labels, probs, strict=True)]


def classify_stored(store: Store, model, ids: Sequence[int]) -> list[Prediction]:
    """The predictions of indexed photos (their stored vectors), in the order of `ids`, each id once."""
    ids = list(dict.fromkeys(ids))
    return predict(model, stored_vectors(store, ids), [{"id": pid} for pid in ids])


def classify(
    store: Store,
    classifiers,
    name: str,
    *,
    photos: Sequence[PhotoInput] | None = None,
    ids: Sequence[int] | None = None,
    collection: str | None = None,
    embed: Embed | None = None,
    save: bool = False,
) -> list[Prediction]:
    """Saved classifier `name`'s predictions for one of: photos (files or bytes, which `embed` turns into vectors),
    indexed ids, or a collection's members. save=True stores those of indexed photos (a writable store).
    classifiers: a search.classifier.Classifiers of the store's home (the caller keeps it between calls)."""
    model = classifiers.get(name, store.stamp.as_dict() if store.stamp else None)
    if photos is not None:
        keys: list[dict[str, Any]] = [{"path": str(p) if not isinstance(p, bytes) else None} for p in photos]
        if photos:
            assert embed is not None
            vectors = embed(np.stack([photo_pixels(p) for p in photos]))
        else:
            vectors = np.empty((0, model.dim), np.float32)
        predictions = predict(model, vectors, keys)
    else:
        pids = member_ids(store, collection) if collection is not None else [check_photo_id(i) for i in ids or []]
        predictions = classify_stored(store, model, pids)
    if save:
        store.save_predictions(name, [(p.id, p.label, p.probability) for p in predictions])
    return predictions
