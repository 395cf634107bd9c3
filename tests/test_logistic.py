"""imgidx's own logistic regression and held-out split against scikit-learn's, which they replace in `train`."""

import logging
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from imgidx.search.classifier import FORMAT, LinearClassifier
from imgidx.search.holdout import stratified_split
from imgidx.search.logistic import LogisticModel, fit_logistic


def _overlapping(n_per_class: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes that overlap (a finite optimum with real probabilities, not a separable blow-up), unit rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    x = np.concatenate([c + 2.5 * rng.normal(size=(n_per_class, dim)) for c in centres])
    x = np.maximum(x, 0)  # ReLU-like, as fc2 is
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat([f"class{i}" for i in range(classes)], n_per_class)
    return x.astype(np.float32), labels


@pytest.mark.parametrize(
    ("counts", "test_size", "seed"),
    [((60, 60), 0.2, 0), ((60, 60), 0.2, 1), ((7, 30, 2), 0.25, 3), ((5, 5, 5, 4), 0.3, 11), ((500, 25), 0.2, 0)],
)
def test_the_split_is_scikit_learns(counts, test_size, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat([f"l{i}" for i in range(len(counts))], counts))
    train, test = stratified_split(labels, test_size=test_size, seed=seed)
    ref_train, ref_test = train_test_split(
        np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels
    )
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_optimum_is_scikit_learns(classes):
    """Both solved tightly, the two fits are the same minimiser: same objective, penalty and intercept."""
    x, y = _overlapping(150, classes, 48, seed=classes)
    ours = fit_logistic(x, y, tol=1e-9)
    ref = LogisticRegression(max_iter=10_000, tol=1e-12).fit(x.astype(np.float64), y)
    assert ours.classes_.tolist() == ref.classes_.tolist()
    assert ours.coef_.shape == ref.coef_.shape and ours.intercept_.shape == ref.intercept_.shape
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-4 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=2e-4 * max(1.0, np.abs(ref.intercept_).max()))
    # float32 products (how the vectors are stored) limit how closely the minimiser is reached
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-4)


@pytest.mark.parametrize("classes", [2, 4])
def test_the_default_stopping_rule_lands_where_scikit_learns_does(classes):
    x, y = _overlapping(200, classes, 64, seed=10 + classes)
    ours, ref = fit_logistic(x, y), LogisticRegression(max_iter=1000).fit(x, y)
    p, q = ours.predict_proba(x), ref.predict_proba(x)
    assert np.abs(p - q).max() < 5e-3
    assert (p.argmax(axis=1) == q.argmax(axis=1)).mean() >= 0.99
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_separable_classes_still_converge_to_the_penalised_optimum():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3, 1, size=(40, 8)), rng.normal(-3, 1, size=(40, 8))]).astype(np.float32)
    y = np.repeat(["a", "b"], 40)
    model = fit_logistic(x, y)
    assert model.n_iter_ < 1000
    assert (model.predict(x) == y).all()
    ref = LogisticRegression().fit(x, y)
    assert np.abs(model.predict_proba(x) - ref.predict_proba(x)).max() < 5e-3


def test_not_converging_within_max_iter_is_logged(caplog):
    x, y = _overlapping(50, 2, 16, seed=5)
    with caplog.at_level(logging.WARNING, logger="imgidx.search.logistic"):
        model = fit_logistic(x, y, max_iter=1)
    assert model.n_iter_ == 1
    assert "without converging" in caplog.text


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_logistic(np.ones((4, 3), np.float32), np.array(["a"] * 4))


def test_training_and_loading_a_logistic_classifier_never_imports_scikit_learn(tmp_path):
    code = f"""
import sys
import numpy as np
from imgidx.search.classifier import LinearClassifier, train_classifier
rng = np.random.default_rng(0)
x = rng.random((60, 16), dtype=np.float32)
report = train_classifier(x, ["a"] * 30 + ["b"] * 30)
path = report.classifier.save({str(tmp_path / "c.joblib")!r}, {{"dim": 16}})
LinearClassifier.load(path).predict(x)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy", "pandas")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_classifier_saved_with_scikit_learns_logistic_regression_still_loads(tmp_path):
    """Files written before imgidx had its own solver hold a scikit-learn estimator: they keep working."""
    x, y = _overlapping(40, 2, 8, seed=1)
    old = LogisticRegression().fit(x, y)
    meta = {"kind": "logistic", "classes": ["class0", "class1"], "train_counts": {"class0": 40, "class1": 40}}
    meta |= {"dim": 8, "stamp": {"dim": 8}, "sklearn_version": __import__("sklearn").__version__}
    path = tmp_path / "old.joblib"
    joblib.dump({"format": FORMAT, "estimator": old, "meta": meta}, path)
    loaded = LinearClassifier.load(path)
    labels, probability = loaded.predict(x)
    np.testing.assert_array_equal(labels, old.classes_[old.predict_proba(x).argmax(axis=1)])
    np.testing.assert_allclose(probability, old.predict_proba(x).max(axis=1))
    assert not isinstance(loaded.estimator, LogisticModel)
