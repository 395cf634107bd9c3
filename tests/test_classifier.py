import json

import joblib
import numpy as np
import pytest
import sklearn

from imgidx.search.classifier import (
    ClassScore,
    LinearClassifier,
    Misclassified,
    StampMismatch,
    TrainReport,
    train_classifier,
)

DIM = 64
STAMP = {"model": "vgg16", "layer": "fc2", "weights": "sha256:abc123", "dim": DIM}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def cats_and_dogs() -> tuple[np.ndarray, list[str]]:
    """Rows 0..59 around a cat centre, 60..119 around a dog centre: linearly separable."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.concatenate([_unit(c + 0.1 * rng.normal(size=(60, DIM))) for c in centres])
    return vectors, ["cat"] * 60 + ["dog"] * 60


@pytest.fixture(scope="module")
def report(cats_and_dogs) -> TrainReport:
    vectors, labels = cats_and_dogs
    return train_classifier(vectors, labels)


@pytest.mark.parametrize("model", ["logistic", "linear-svm", "svm-rbf"])
def test_separable_clusters_are_classified_perfectly(cats_and_dogs, model):
    vectors, labels = cats_and_dogs
    result = train_classifier(vectors, labels, model=model)
    assert result.model == model and result.classifier.kind == model
    assert result.accuracy == 1.0
    assert result.classes == ("cat", "dog")
    assert result.confusion == [[12, 0], [0, 12]]
    assert result.per_class == {"cat": ClassScore(1.0, 1.0, 12), "dog": ClassScore(1.0, 1.0, 12)}
    assert result.misclassified == ()
    assert (result.n_train, result.n_test) == (96, 24)
    assert result.classifier.train_counts == {"cat": 48, "dog": 48}


def test_a_wrong_label_in_the_test_split_is_reported_by_input_row(cats_and_dogs):
    vectors, labels = cats_and_dogs
    labels = list(labels)
    labels[7] = "dog"  # a cat photo labelled dog; with seed=1 row 7 falls in the test split
    result = train_classifier(vectors, labels, seed=1)
    assert len(result.misclassified) == 1
    wrong = result.misclassified[0]
    assert (wrong.index, wrong.true, wrong.predicted) == (7, "dog", "cat")
    assert isinstance(wrong, Misclassified) and 0.5 < wrong.probability <= 1.0
    assert result.accuracy == pytest.approx(23 / 24)
    assert result.confusion == [[12, 0], [1, 11]]
    assert result.per_class["dog"].recall == pytest.approx(11 / 12)
    assert result.per_class["cat"].precision == pytest.approx(12 / 13)


def test_predict_returns_the_probability_of_the_predicted_label(report, cats_and_dogs):
    vectors, labels = cats_and_dogs
    predicted, probability = report.classifier.predict(vectors)
    assert predicted.tolist() == labels
    full = report.classifier.estimator.predict_proba(vectors)
    np.testing.assert_allclose(probability, full.max(axis=1))
    assert (probability > 0.5).all() and probability.dtype == np.float64


def test_save_and_load_round_trip_keeps_predictions_and_stamp(report, cats_and_dogs, tmp_path):
    vectors, _ = cats_and_dogs
    path = report.classifier.save(tmp_path / "models" / "cat-dog.joblib", STAMP)
    assert [p.name for p in path.parent.iterdir()] == ["cat-dog.joblib"]  # no temp file left behind
    loaded = LinearClassifier.load(path)
    before, after = report.classifier.predict(vectors), loaded.predict(vectors)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.stamp == STAMP
    assert loaded.meta == {
        "kind": "logistic",
        "classes": ["cat", "dog"],
        "train_counts": {"cat": 48, "dog": 48},
        "dim": DIM,
        "stamp": STAMP,
        "sklearn_version": None,  # imgidx's own logistic regression: no scikit-learn in the file
    }
    json.dumps(loaded.meta)  # printable as is
    loaded.check_stamp(STAMP)
    loaded.check_stamp({"layer": "fc2"})  # only the keys asked about are compared


def test_stamp_mismatch_names_both_stamps(report, tmp_path):
    loaded = LinearClassifier.load(report.classifier.save(tmp_path / "m.joblib", STAMP))
    other = dict(STAMP, layer="block5_pool", dim=25088)
    with pytest.raises(StampMismatch) as caught:
        loaded.check_stamp(other)
    message = str(caught.value)
    assert "differs in: dim, layer" in message
    assert "'layer': 'fc2'" in message and "'layer': 'block5_pool'" in message
    assert isinstance(caught.value, ValueError)


def test_saving_again_replaces_the_file(report, tmp_path):
    path = tmp_path / "m.joblib"
    report.classifier.save(path, STAMP)
    report.classifier.save(path, dict(STAMP, weights="sha256:def456"))
    assert LinearClassifier.load(path).stamp["weights"] == "sha256:def456"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib"]


def test_loading_a_foreign_file_is_a_value_error(tmp_path):
    path = tmp_path / "other.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    with pytest.raises(ValueError, match="is not an imgidx classifier file of format 1; found None"):
        LinearClassifier.load(path)


def test_unserialisable_stamp_is_a_type_error(report, tmp_path):
    with pytest.raises(TypeError, match="stamp must be JSON-serialisable"):
        report.classifier.save(tmp_path / "m.joblib", {"dim": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_predict_rejects_vectors_of_another_dimension(report):
    with pytest.raises(TypeError, match="must have 64 dimensions like the training data; received 32"):
        report.classifier.predict(np.zeros((2, 32), dtype=np.float32))


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (["cat"] * 10, {}, r"at least 2 labels; received only \['cat'\]"),
        (["cat"] * 9 + ["dog"], {}, r"at least 2 photos .* too few: \['dog'\]"),
        (["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"], {}, r"test split of 2 photos .* 5 labels"),
        (["cat", "dog"] * 5, {"test_size": 0.9}, r"train split of 1 photos"),
        (["cat", "dog"] * 5, {"test_size": 1.5}, r"test_size must be a fraction between 0 and 1; received 1.5"),
        (["cat", "dog"] * 5, {"model": "forest"}, r"model must be one of logistic, linear-svm, svm-rbf"),
        (["cat", "dog"] * 4, {}, r"one entry per vector \(10\); received 8"),
        (["cat", "dog"] * 2 + ["cat"] * 6, {"model": "linear-svm", "test_size": 0.5}, r"or use model='logistic'"),
    ],
)
def test_training_set_problems_say_what_to_do(labels, kwargs, message):
    vectors = _unit(np.random.default_rng(1).normal(size=(10, 8)))
    with pytest.raises(ValueError, match=message):
        train_classifier(vectors, labels, **kwargs)


def test_an_svm_file_records_the_scikit_learn_that_pickled_it(cats_and_dogs, tmp_path):
    vectors, labels = cats_and_dogs
    svm = train_classifier(vectors, labels, model="linear-svm").classifier
    loaded = LinearClassifier.load(svm.save(tmp_path / "svm.joblib", STAMP))
    assert loaded.meta["sklearn_version"] == sklearn.__version__
    np.testing.assert_array_equal(loaded.predict(vectors)[0], svm.predict(vectors)[0])
