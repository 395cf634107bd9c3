import numpy as np
import pytest

import imgidx.search.audit
from imgidx.search.audit import AuditResult, PhotoAudit, audit_labels, nearest_neighbours

DIM = 64
CAT_AS_DOG = (3, 50, 97)  # cat photos labelled "dog"
DOG_AS_CAT = (120, 150)  # dog photos labelled "cat"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray]:
    """Rows 0..99 around a cat centre, 100..199 around a dog centre, 200..229 around a fox centre."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = (100, 100, 30)
    vectors = np.concatenate([_unit(c + 0.08 * rng.normal(size=(n, DIM))) for c, n in zip(centres, sizes, strict=True)])
    return vectors, centres


def _swapped_labels() -> list[str]:
    labels = ["cat"] * 100 + ["dog"] * 100
    for i in CAT_AS_DOG:
        labels[i] = "dog"
    for i in DOG_AS_CAT:
        labels[i] = "cat"
    return labels


def test_swapped_labels_are_recovered_and_nothing_else_is_flagged(clusters):
    vectors, _ = clusters
    result = audit_labels(vectors[:200], _swapped_labels())
    assert isinstance(result, AuditResult)
    assert result.classes == ("cat", "dog") and result.k == 10
    assert sorted(p.index for p in result.suspects) == sorted(CAT_AS_DOG + DOG_AS_CAT)
    assert {p.index: p.suggested for p in result.suspects} == {3: "cat", 50: "cat", 97: "cat", 120: "dog", 150: "dog"}
    assert [p.index for p in result.suspects] == [50, 3, 120, 97, 150]  # largest margin first
    three = result.photos[3]
    assert three.label == "dog"
    assert three.reasons == ("closer to cat centroid", "10/10 neighbours are cat")
    assert three.agreement == 0.0
    assert three.margin == pytest.approx(0.8593266, abs=1e-6)
    fine = result.photos[0]
    assert fine.reasons == () and not fine.flagged and fine.suggested == "cat"
    assert fine.agreement == 0.9 and fine.margin < 0


def test_mislabelled_photos_do_not_pull_their_labels_centroid(clusters):
    vectors, centres = clusters
    result = audit_labels(vectors[:200], _swapped_labels())
    # The robust centroid of "dog" leaves out the three cats, so it matches the mean of the true dogs.
    dog_rows = [i for i in range(100, 200) if i not in DOG_AS_CAT]
    np.testing.assert_allclose(result.centroids[1], vectors[dog_rows].astype(np.float64).mean(axis=0), atol=1e-12)


def test_three_collections_point_to_the_right_one(clusters):
    vectors, _ = clusters
    labels = _swapped_labels() + ["fox"] * 30
    labels[10] = "fox"
    labels[205] = "cat"
    result = audit_labels(vectors, labels)
    suggested = {p.index: p.suggested for p in result.suspects}
    assert suggested == {3: "cat", 50: "cat", 97: "cat", 120: "dog", 150: "dog", 10: "cat", 205: "fox"}
    assert result.photos[10].reasons == ("closer to cat centroid", "9/10 neighbours are cat")


def test_neighbour_majority_alone_flags_a_photo():
    # Photo 3 (labelled "a") is Euclidean-close to the "a" centroid near (1, 0), but points in almost the
    # direction of the "b" photos far up the y axis, so its cosine neighbours are all "b".
    vectors = np.array([[1.0, 0.0], [1.0, 0.05], [1.0, -0.05], [0.5, 1.0], [0.0, 10.0], [0.1, 10.0], [-0.1, 10.0]])
    labels = ["a", "a", "a", "a", "b", "b", "b"]
    result = audit_labels(vectors, labels, k=3)
    photo = result.photos[3]
    assert photo.reasons == ("3/3 neighbours are b",)
    assert photo.suggested == "b" and photo.agreement == 0.0
    assert photo.margin == pytest.approx(np.hypot(0.5, 1.0) - np.hypot(0.5, 9.0))
    assert [p.index for p in result.suspects] == [3]
    assert [round(p.agreement, 3) for p in result.photos] == [1.0, 1.0, 1.0, 0.0, 0.667, 0.667, 0.667]


def test_blocked_neighbour_search_matches_one_block(clusters, monkeypatch):
    vectors, _ = clusters
    whole = nearest_neighbours(vectors, 5)
    monkeypatch.setattr(imgidx.search.audit, "_BLOCK_ROWS", 7)
    np.testing.assert_array_equal(nearest_neighbours(vectors, 5), whole)
    assert not (whole == np.arange(len(vectors))[:, None]).any()  # never its own neighbour
    sims = (vectors @ vectors.T)[np.arange(len(vectors))[:, None], whole]
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # most similar first


def test_k_is_capped_at_the_number_of_other_photos():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    result = audit_labels(vectors, ["a", "a", "b"], k=10)
    assert result.k == 2
    assert [p.agreement for p in result.photos] == [0.5, 0.5, 0.0]


def test_bad_input_raises_clear_errors(clusters):
    vectors, _ = clusters
    with pytest.raises(ValueError, match=r"at least 2 collections to compare; received \['cat'\]"):
        audit_labels(vectors[:5], ["cat"] * 5)
    with pytest.raises(ValueError, match=r"one entry per vector \(5\); received 4"):
        audit_labels(vectors[:5], ["cat", "dog", "cat", "dog"])
    with pytest.raises(ValueError, match="k must be an integer >= 1; received 0"):
        audit_labels(vectors[:4], ["cat", "dog", "cat", "dog"], k=0)
    with pytest.raises(TypeError, match="2-D"):
        audit_labels(vectors[0], ["cat"])


def test_photo_audit_is_frozen():
    photo = PhotoAudit(index=0, label="a", suggested="a", margin=-1.0, agreement=1.0, reasons=())
    with pytest.raises(AttributeError):
        photo.label = "b"
