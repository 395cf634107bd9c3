"""Train a classifier on stored fc2 vectors (the seed's §9.5 cat-vs-dog SVM), report on it, save and load it.

The default, logistic regression, is fitted by search/logistic.py (scikit-learn's objective and stopping rule,
without importing scikit-learn, which costs more than the rest of a training run); the SVMs are scikit-learn's.
The caller loads vectors and labels from the store. A saved classifier carries a ``stamp`` (model, layer, weights
fingerprint, dimension, …) so it is never applied to vectors from a different embedder without a clear error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from numbers import Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from imgidx.indexer import atomic
from imgidx.indexer.errors import ClassifierError, InvalidArgument, NotFound, StampMismatch
from imgidx.indexer.layout import classifiers_folder

from .cleanup import check_vectors
from .holdout import stratified_split
from .logistic import fit_logistic

# scikit-learn and joblib are imported inside the functions that use them: importing sklearn pulls in scipy.stats
# and pandas, and the CLI imports this module for every command, including --help.

logger = logging.getLogger(__name__)

ModelKind = Literal["logistic", "linear-svm", "svm-rbf"]
MODELS: tuple[str, ...] = ("logistic", "linear-svm", "svm-rbf")
FORMAT = 1  # bump when the saved payload changes shape
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
__all__ = ["StampMismatch"]  # raised by check_stamp; the one class of indexer.errors, re-exported here
_CALIBRATION_FOLDS = 5


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    support: int  # test photos with this true label


@dataclass(frozen=True)
class Misclassified:
    index: int  # row of the vectors/labels passed to train_classifier
    true: str
    predicted: str
    probability: float  # the classifier's probability for ``predicted``


class LinearClassifier:
    """A fitted classifier (search.logistic.LogisticModel or a scikit-learn estimator) plus what is needed to use
    it safely later.

    Named for the default (logistic regression); "svm-rbf" is not linear but shares the interface.
    """

    def __init__(
        self,
        estimator: Any,
        *,
        kind: str,
        train_counts: dict[str, int],
        stamp: dict[str, Any] | None = None,
        sklearn_version: str | None = None,
    ) -> None:
        self.estimator = estimator
        self.kind = kind
        self.classes: tuple[str, ...] = tuple(str(c) for c in estimator.classes_)
        self.train_counts = dict(train_counts)
        self.stamp = stamp
        # which scikit-learn pickled it (a version mismatch is worth a warning); None for imgidx's own model
        self.sklearn_version = sklearn_version or (_sklearn_version() if _from_sklearn(estimator) else None)

    @property
    def dim(self) -> int:
        return int(self.estimator.n_features_in_)

    def predict(self, vectors: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float64]]:
        """Predicted label of each row and the probability the classifier gives that label."""
        check_vectors(vectors, "vectors")
        if vectors.shape[1] != self.dim:
            raise TypeError(
                f"vectors must have {self.dim} dimensions like the training data; received {vectors.shape[1]}"
            )
        proba = self.estimator.predict_proba(vectors)
        # argmax of the probabilities (not estimator.predict) so label and probability always agree.
        best = proba.argmax(axis=1)
        labels = np.asarray(self.classes, dtype=str)[best]
        return labels, proba[np.arange(len(best)), best].astype(np.float64)

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "classes": list(self.classes),
            "train_counts": self.train_counts,
            "dim": self.dim,
            "stamp": self.stamp,
            "sklearn_version": self.sklearn_version,
        }

    def save(self, path: str | os.PathLike[str], stamp: dict[str, Any]) -> Path:
        """Write the classifier and ``stamp`` to one joblib file, atomically (indexer/atomic.py).

        One file rather than a JSON sidecar: the stamp can never drift apart from the model it describes.
        """
        try:
            self.stamp = json.loads(json.dumps(stamp))  # plain JSON data, so it prints and compares simply
        except (TypeError, ValueError) as exc:
            raise TypeError(f"stamp must be JSON-serialisable; received {stamp!r}") from exc
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "estimator": self.estimator, "meta": self.meta}
        import joblib

        return atomic.write_with(target, lambda handle: joblib.dump(payload, handle))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearClassifier:
        """Read a file written by :meth:`save` (joblib unpickles: load only files you made)."""
        import joblib

        payload = joblib.load(path)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"{path} is not an imgidx classifier file of format {FORMAT}; found {found!r}")
        meta = payload["meta"]
        if meta["sklearn_version"] is not None and meta["sklearn_version"] != _sklearn_version():
            logger.warning(
                "%s was saved with scikit-learn %s; running %s", path, meta["sklearn_version"], _sklearn_version()
            )
        return cls(
            payload["estimator"],
            kind=meta["kind"],
            train_counts=meta["train_counts"],
            stamp=meta["stamp"],
            sklearn_version=meta["sklearn_version"],
        )

    def check_stamp(self, expected: dict[str, Any]) -> None:
        """Raise StampMismatch unless every key of ``expected`` has the same value in this classifier's stamp."""
        wanted = json.loads(json.dumps(expected))
        stored = self.stamp or {}
        differing = sorted(key for key in wanted if key not in stored or stored[key] != wanted[key])
        if differing:
            raise StampMismatch(
                f"classifier was trained on vectors stamped {stored} but these are stamped {wanted} "
                f"(differs in: {', '.join(differing)}); retrain the classifier on this index"
            )


@dataclass(frozen=True)
class TrainReport:
    model: str
    classes: tuple[str, ...]  # sorted; the row and column order of ``confusion``
    accuracy: float  # on the held-out test split
    per_class: dict[str, ClassScore]
    confusion: list[list[int]]  # confusion[true][predicted], in ``classes`` order
    misclassified: tuple[Misclassified, ...]  # test photos the classifier got wrong, by input row
    n_train: int
    n_test: int
    classifier: LinearClassifier


def train_classifier(
    vectors: npt.NDArray[np.floating],
    labels: Sequence[str],
    *,
    model: ModelKind = "logistic",
    test_size: float = 0.2,
    seed: int = 0,
) -> TrainReport:
    """Fit ``model`` on a stratified train split and report its accuracy on the held-out rest."""
    check_vectors(vectors, "vectors")
    y = np.asarray([str(label) for label in labels])
    _check_training_set(len(vectors), y, model, test_size)
    train_rows, test_rows = stratified_split(y, test_size=test_size, seed=seed)
    train_counts = dict(sorted(Counter(y[train_rows].tolist()).items()))
    # The saved model is the one fitted on the train split only (no refit on all photos), so the accuracy
    # and mistakes reported below describe exactly the classifier that gets saved and used.
    if model == "logistic":
        estimator = fit_logistic(vectors[train_rows], y[train_rows])
    else:
        estimator = _svm(model, seed, min(train_counts.values()))
        estimator.fit(vectors[train_rows], y[train_rows])
    classifier = LinearClassifier(estimator, kind=model, train_counts=train_counts)
    return _report(classifier, vectors[test_rows], y[test_rows], test_rows, n_train=len(train_rows))


def _svm(model: str, seed: int, smallest_class: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC, LinearSVC

    # Both SVMs get probabilities by Platt scaling on cross-validated decision values; this is what
    # scikit-learn 1.9 recommends instead of the deprecated SVC(probability=True).
    folds = min(_CALIBRATION_FOLDS, smallest_class)
    if folds < 2:
        raise ValueError(
            f"model {model!r} calibrates its probabilities by cross-validation and needs at least 2 training "
            f"photos per class; the smallest class has {smallest_class}: add photos or use model='logistic'"
        )
    base = LinearSVC(random_state=seed) if model == "linear-svm" else SVC(kernel="rbf", random_state=seed)
    return CalibratedClassifierCV(base, cv=folds, ensemble=False)


def _report(
    classifier: LinearClassifier,
    x_test: npt.NDArray[np.floating],
    y_test: npt.NDArray[np.str_],
    test_rows: npt.NDArray[np.intp],
    *,
    n_train: int,
) -> TrainReport:
    predicted, probability = classifier.predict(x_test)
    classes = list(classifier.classes)
    confusion = _confusion(y_test, predicted, classes)
    hits = np.diag(confusion)
    support, called = confusion.sum(axis=1), confusion.sum(axis=0)
    wrong = np.flatnonzero(predicted != y_test)
    return TrainReport(
        model=classifier.kind,
        classes=tuple(classes),
        accuracy=float(np.mean(predicted == y_test)),
        per_class={
            # precision of a class never predicted is 0, as scikit-learn's zero_division=0 gives
            c: ClassScore(_ratio(hits[i], called[i]), _ratio(hits[i], support[i]), int(support[i]))
            for i, c in enumerate(classes)
        },
        confusion=confusion.tolist(),
        misclassified=tuple(
            Misclassified(int(test_rows[i]), str(y_test[i]), str(predicted[i]), float(probability[i]))
            for i in sorted(wrong, key=lambda i: test_rows[i])
        ),
        n_train=n_train,
        n_test=len(y_test),
        classifier=classifier,
    )


def _confusion(
    true: npt.NDArray[np.str_], predicted: npt.NDArray[np.str_], classes: list[str]
) -> npt.NDArray[np.int64]:
    """confusion[i][j]: test photos of classes[i] predicted as classes[j]."""
    position = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(out, ([position[t] for t in true.tolist()], [position[p] for p in predicted.tolist()]), 1)
    return out


def _ratio(part: int, whole: int) -> float:
    return float(part / whole) if whole else 0.0


def _from_sklearn(estimator: Any) -> bool:
    return type(estimator).__module__.split(".")[0] == "sklearn"


def _sklearn_version() -> str:
    return version("scikit-learn")


def _check_training_set(n: int, y: npt.NDArray[np.str_], model: str, test_size: float) -> None:
    if len(y) != n:
        raise ValueError(f"labels must have one entry per vector ({n}); received {len(y)}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; received {model!r}")
    if isinstance(test_size, bool) or not isinstance(test_size, Real) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction between 0 and 1; received {test_size!r}")
    counts = Counter(y.tolist())
    if len(counts) < 2:
        raise ValueError(f"a classifier needs photos of at least 2 labels; received only {sorted(counts)}: add another")
    small = sorted(label for label, count in counts.items() if count < 2)
    if small:
        raise ValueError(f"each label needs at least 2 photos (one to train, one to test); too few: {small}")
    # train_test_split's arithmetic: the test split gets ceil(test_size·n) photos, the train split the rest.
    n_test = math.ceil(test_size * n)
    if n_test < len(counts):
        raise ValueError(
            f"a test split of {n_test} photos (test_size={test_size}) cannot hold one of each of the "
            f"{len(counts)} labels; raise test_size to at least {math.ceil(100 * len(counts) / n) / 100} or add photos"
        )
    if n - n_test < len(counts):
        raise ValueError(
            f"a train split of {n - n_test} photos (test_size={test_size}) cannot hold one of each of the "
            f"{len(counts)} labels; lower test_size or add photos"
        )


# ---- saved classifiers of an index: <home>/classifiers/<name>.joblib ---------------------------------------------


def classifier_path(home: str | os.PathLike[str], name: str) -> Path:
    """Classifiers live next to the index, named by the user; the name never becomes a path elsewhere."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name.startswith("."):
        raise InvalidArgument(f"classifier names use letters, digits, '_', '-' and '.'; received {name!r}")
    return classifiers_folder(home) / f"{name}.joblib"


def classifier_names(home: str | os.PathLike[str]) -> list[str]:
    folder = classifiers_folder(home)
    names = sorted(p.stem for p in folder.glob("*.joblib")) if folder.is_dir() else []
    return [n for n in names if NAME_RE.match(n) and not n.startswith(".")]


class Classifiers:
    """Loads the saved classifiers of one data home, checked against the index's stamp; keeps each loaded until
    its file changes (a long-lived service asks for the same few classifiers again and again)."""

    def __init__(self, home: str | os.PathLike[str]):
        self.home = Path(home)
        self._loaded: dict[str, tuple[int, LinearClassifier]] = {}

    def get(self, name: str, stamp: dict[str, Any] | None) -> LinearClassifier:
        path = classifier_path(self.home, name)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            known = ", ".join(classifier_names(self.home)) or "none yet; train one first"
            raise NotFound(f"no classifier {name!r} in {path.parent} (classifiers: {known})") from None
        cached = self._loaded.get(name)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, LinearClassifier.load(path))
            except (ValueError, OSError, KeyError, EOFError) as e:
                raise ClassifierError(f"classifier {name!r} cannot be loaded: {e}") from None
            self._loaded[name] = cached
        model = cached[1]
        try:
            model.check_stamp(stamp or {})
        except StampMismatch as e:
            raise StampMismatch(f"classifier {name!r} was trained on other vectors: {e}") from None
        return model
