import dataclasses
import re

import numpy as np
import pytest

from imgidx.search.cleanup import CleanResult, clean_ranking, robust_z
from imgidx.search.outliers import rank_outliers

DIM = 64


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _centres(seed: int, count: int) -> np.ndarray:
    c = np.random.default_rng(seed).normal(size=(count, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.08) -> np.ndarray:
    return _unit(centre + spread * rng.normal(size=(n, DIM)))


@pytest.fixture(scope="module")
def cats_with_planted_dogs() -> np.ndarray:
    """200 unit vectors around one centre, then 10 from another cluster (rows 200..209).

    With k_mad=3 about one photo in 600 of a Gaussian cluster lands past the cut by chance; this seed has
    none (largest inlier z is 2.60), so any extra flag is a bug.
    """
    rng = np.random.default_rng(0)
    cat, dog = _centres(0, 2)
    return np.concatenate([_cluster(rng, cat, 200), _cluster(rng, dog, 10)])


def _line(*xs: float) -> np.ndarray:
    """Points on a line, so distances can be checked by hand."""
    return np.array([[x, 0.0] for x in xs])


def test_planted_outliers_are_flagged_and_nothing_else(cats_with_planted_dogs):
    result = clean_ranking(cats_with_planted_dogs)
    assert np.flatnonzero(result.flagged).tolist() == list(range(200, 210))
    assert sorted(result.order[-10:].tolist()) == list(range(200, 210))
    assert sorted(result.outliers.tolist()) == list(range(200, 210))
    assert result.distances[result.outliers[0]] == result.distances.max()
    assert (result.z[200:] > 3.0).all() and (result.z[:200] <= 3.0).all()
    assert result.first_flagged.tolist() == [0] * 200 + [1] * 10
    # The centroid is the mean of the inliers only, and the distances are measured to it.
    np.testing.assert_allclose(result.centroid, cats_with_planted_dogs[:200].astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(
        result.distances, np.linalg.norm(cats_with_planted_dogs - result.centroid, axis=1), rtol=1e-6
    )


def test_drop_flags_exactly_the_n_farthest(cats_with_planted_dogs):
    result = clean_ranking(cats_with_planted_dogs, drop=5)
    farthest = np.argsort(result.distances)[-5:]
    assert np.flatnonzero(result.flagged).tolist() == sorted(farthest.tolist()) == [200, 202, 203, 205, 208]
    assert result.cutoff == result.distances[~result.flagged].max()
    assert clean_ranking(cats_with_planted_dogs, drop=10).flagged.nonzero()[0].tolist() == list(range(200, 210))
    assert not clean_ranking(cats_with_planted_dogs, drop=0).flagged.any()


def test_auto_cut_flags_a_masked_outlier_on_the_second_pass():
    # Pass 1: mean 40/7, distances 18.29 17.29 1.71 8.71 9.71 6.71 8.71; median 8.71, MAD 2 → cutoff 17.61: 24 only.
    # Pass 2: mean 16/6 without 24; median 5.67, MAD 1 → cutoff 10.12: 24 and 23.
    # Pass 3: mean -1.4 without both; median 2.6, MAD 2.2 → cutoff 2.6 + 3·1.4826·2.2; same flags, so it stops.
    result = clean_ranking(_line(24, 23, 4, -3, -4, -1, -3), iterations=10)
    assert result.flagged.tolist() == [True, True, False, False, False, False, False]
    assert result.first_flagged.tolist() == [1, 2, 0, 0, 0, 0, 0]
    assert result.iterations_run == 3
    assert result.cutoff == pytest.approx(2.6 + 3 * 1.4826 * 2.2)
    np.testing.assert_allclose(result.centroid, [-1.4, 0.0])
    np.testing.assert_allclose(result.distances, [25.4, 24.4, 5.4, 1.6, 2.6, 0.4, 1.6])
    assert result.order.tolist() == [5, 3, 6, 4, 2, 1, 0]


def test_threshold_stops_early_once_the_flags_stop_changing():
    # 12 pulls the first centroid towards 3.5, hiding it; without 12 the centroid is 3.5/6 and 3.5 is 2.92 away.
    points = _line(0, 0, 0, 0, 0, 3.5, 12)
    result = clean_ranking(points, threshold=2.5, iterations=50)
    assert result.flagged.tolist() == [False] * 5 + [True, True]
    assert result.first_flagged.tolist() == [0] * 5 + [2, 1]
    assert result.iterations_run == 3
    assert result.cutoff == 2.5
    capped = clean_ranking(points, threshold=2.5, iterations=2)
    assert capped.iterations_run == 2
    assert capped.first_flagged.tolist() == [0] * 5 + [2, 1]
    np.testing.assert_allclose(capped.centroid, [3.5 / 6, 0.0])


def test_threshold_that_flags_every_photo_stops_after_one_pass():
    result = clean_ranking(_line(0, 1, 5), threshold=0.0, iterations=5)
    assert result.flagged.all() and result.iterations_run == 1
    assert result.first_flagged.tolist() == [1, 1, 1]


def test_photo_cleared_once_the_centroid_moves_is_not_flagged():
    # -2.3 is flagged on pass 1 (the mean is dragged to 1.67 by 14) and cleared on pass 2.
    result = clean_ranking(_line(0, 0, 0, 0, 0, -2.3, 14), threshold=2.5)
    assert result.flagged.tolist() == [False] * 6 + [True]
    assert result.first_flagged.tolist() == [0] * 6 + [1]
    assert result.iterations_run == 3


def test_first_flagged_counts_only_the_final_uninterrupted_run():
    points = np.array([[-2, 1], [3, 7], [4, 10], [3, 6], [1, 11], [-8, -3], [-4, 7]], dtype=np.float64)
    # Flags per pass (rows 0..6): 1010110, 1010011, 1000111, 1000111 (same as pass 3: stop).
    # Row 4 is flagged on pass 1, cleared on pass 2 and flagged again from pass 3 on; row 6 from pass 2.
    result = clean_ranking(points, drop=4, iterations=10)
    assert result.iterations_run == 4
    assert result.flagged.tolist() == [True, False, False, False, True, True, True]
    assert result.first_flagged.tolist() == [1, 0, 0, 0, 3, 1, 2]


def test_early_stop_gives_the_same_result_as_the_needed_passes(cats_with_planted_dogs):
    long = clean_ranking(cats_with_planted_dogs, iterations=50)
    short = clean_ranking(cats_with_planted_dogs, iterations=2)
    assert long.iterations_run == 2
    np.testing.assert_array_equal(long.distances, short.distances)
    np.testing.assert_array_equal(long.flagged, short.flagged)


def test_reference_measures_distances_to_the_other_collections_robust_centroid():
    rng = np.random.default_rng(7)
    cat, dog = _centres(42, 2)
    curated_cats = np.concatenate([_cluster(rng, cat, 120), _cluster(rng, dog, 6)])
    maybe_cats = np.concatenate([_cluster(rng, cat, 50), _cluster(rng, dog, 4), _cluster(rng, cat, 30)])
    result = clean_ranking(maybe_cats, reference=curated_cats)
    np.testing.assert_array_equal(result.centroid, clean_ranking(curated_cats).centroid)
    assert np.flatnonzero(result.flagged).tolist() == [50, 51, 52, 53]
    assert result.first_flagged.tolist() == [0] * 50 + [1] * 4 + [0] * 30
    assert result.iterations_run == 1
    dogs = clean_ranking(_cluster(rng, dog, 20), reference=curated_cats)
    assert dogs.flagged.all()
    assert clean_ranking(maybe_cats, reference=curated_cats, drop=3).flagged.sum() == 3


def test_reference_with_other_dimension_is_a_type_error(cats_with_planted_dogs):
    with pytest.raises(TypeError, match="reference must have 64 dimensions like vectors; received 3"):
        clean_ranking(cats_with_planted_dogs, reference=np.zeros((4, 3)))


def test_one_and_two_photos_and_identical_vectors_flag_nothing():
    one = clean_ranking(np.ones((1, 8), dtype=np.float32))
    assert one.order.tolist() == [0] and one.distances.tolist() == [0.0] and one.z.tolist() == [0.0]
    assert not one.flagged.any() and one.iterations_run == 1
    two = clean_ranking(_line(0, 1))
    assert not two.flagged.any() and two.z.tolist() == [0.0, 0.0]
    assert two.distances.tolist() == [0.5, 0.5]
    assert clean_ranking(_line(0, 1), drop=1).flagged.tolist() == [False, True]
    same = clean_ranking(np.tile(np.float32([0.1, 0.2, 0.3]), (50, 1)))
    assert not same.flagged.any() and not same.z.any() and same.iterations_run == 1


def test_ties_beyond_half_use_the_mean_deviation_instead_of_a_zero_mad():
    points = np.concatenate([np.tile([1.0, 0.0], (20, 1)), [[-1.0, 0.0]]])
    result = clean_ranking(points)
    assert result.flagged.tolist() == [False] * 20 + [True]
    assert np.isfinite(result.z).all() and result.z[:20].tolist() == [0.0] * 20


def test_robust_z_uses_scaled_mad():
    np.testing.assert_allclose(robust_z(np.array([1.0, 2, 3, 4, 100])), (np.array([1.0, 2, 3, 4, 100]) - 3) / 1.4826)


def test_bad_input_raises_clear_errors(cats_with_planted_dogs):
    with pytest.raises(ValueError, match="vectors is empty: there are no photos to rank"):
        clean_ranking(np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"drop must be < number of photos \(210\); received 210"):
        clean_ranking(cats_with_planted_dogs, drop=210)
    with pytest.raises(TypeError, match="2-D"):
        clean_ranking(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="must hold floats; received dtype int64"):
        clean_ranking(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="received list"):
        clean_ranking([[0.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        clean_ranking(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="either drop or threshold"):
        clean_ranking(cats_with_planted_dogs, drop=2, threshold=0.5)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1; received 0"):
        clean_ranking(cats_with_planted_dogs, iterations=0)
    with pytest.raises(ValueError, match="threshold"):
        clean_ranking(cats_with_planted_dogs, threshold="median")


def test_result_is_frozen(cats_with_planted_dogs):
    result = clean_ranking(cats_with_planted_dogs)
    assert isinstance(result, CleanResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.cutoff = 0.0


# ---- rank_outliers: the cut that uses the index's other collections (search/outliers.py) ----------------------


def _near(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """A centre t of the way from a towards b's direction (unit length)."""
    return _unit((a + t * b)[None])[0]


@pytest.fixture(scope="module")
def pets():
    """maybe_cat: 200 cats + 10 dogs (rows 200..209) whose centre sits close to the cats' (the seed's loop
    flags only 3 of them), next to curated `cat` and `dog` collections of 200 each."""
    rng = np.random.default_rng(10)  # not the centres' seed: their first draws would be the centres themselves
    c = _centres(0, 2)
    cat, dog = c[0], _near(c[0], c[1], 0.5)
    maybe = np.concatenate([_cluster(rng, cat, 200), _cluster(rng, dog, 10)])
    return maybe, {"cat": _cluster(rng, cat, 200), "dog": _cluster(rng, dog, 200)}


def test_other_collections_find_the_dogs_the_seed_loop_misses(pets):
    maybe, others = pets
    assert np.flatnonzero(clean_ranking(maybe).flagged).tolist() == [200, 205, 208]
    result = rank_outliers(maybe, others=others)
    assert np.flatnonzero(result.flagged).tolist() == list(range(200, 210))
    assert (result.allies, result.rivals, result.method, result.k) == (("cat",), ("dog",), "index", 10)
    assert sorted(result.order[-10:].tolist()) == list(range(200, 210))
    assert (result.score[200:] > 1).all() and (result.score[:200] <= 1).all()
    assert (result.margin[200:] < 0).all() and (result.votes[200:] > 5).all()
    assert result.reasons[:200] == ("",) * 200
    for i in range(200, 210):
        assert re.fullmatch(
            r"nearer to dog \(margin -0\.\d{3}\); (6|7|8|9|10) of 10 neighbours in dog", result.reasons[i]
        )
    # The seed's own numbers stay in the result, unchanged.
    seed = clean_ranking(maybe)
    np.testing.assert_array_equal(result.distances, seed.distances)
    np.testing.assert_array_equal(result.centroid, seed.centroid)


def test_a_rival_alone_is_enough(pets):
    maybe, others = pets
    result = rank_outliers(maybe, others={"dog": others["dog"]})
    assert (result.allies, result.rivals) == ((), ("dog",))
    assert np.flatnonzero(result.flagged).tolist() == list(range(200, 210))


def test_single_collection_is_exactly_the_seed_loop(cats_with_planted_dogs):
    seed = clean_ranking(cats_with_planted_dogs)
    result = rank_outliers(cats_with_planted_dogs)
    assert result.method == "centroid" and result.allies == result.rivals == ()
    np.testing.assert_array_equal(result.flagged, seed.flagged)
    np.testing.assert_array_equal(result.order, seed.order)
    np.testing.assert_array_equal(result.first_flagged, seed.first_flagged)
    assert result.cutoff == seed.cutoff and result.iterations_run == seed.iterations_run
    assert result.reasons[:200] == ("",) * 200
    assert all(re.fullmatch(r"z \d+\.\d from the centre", r) for r in result.reasons[200:])
    assert result.reasons[205] == f"z {seed.z[205]:.1f} from the centre"


def test_seed_cuts_on_request_ignore_the_other_collections(pets):
    maybe, others = pets
    for kwargs in ({"drop": 4}, {"threshold": 0.5}, {"reference": others["cat"]}):
        seed = clean_ranking(maybe, **kwargs)
        result = rank_outliers(maybe, others=others, **kwargs)
        np.testing.assert_array_equal(result.flagged, seed.flagged)
        np.testing.assert_array_equal(result.order, seed.order)
        assert result.rivals == () and result.cutoff == seed.cutoff
    assert rank_outliers(maybe, reference=others["cat"]).method == "against"


def test_far_from_everything_is_flagged_but_an_odd_photo_with_look_alikes_is_kept():
    rng = np.random.default_rng(3)
    cat, dog, odd, scene = _centres(5, 4)
    cats = _cluster(rng, cat, 200)
    # An unusual cat: far from the cat centre (the seed's loop flags it), but the curated `cat` collection
    # holds photos like it.
    odd_cat = _unit((cat + 1.2 * odd)[None] + 0.02 * rng.normal(size=(1, DIM)))
    scenes = _cluster(rng, scene, 8, spread=0.05)  # non-animals: far from every collection
    maybe = np.concatenate([cats, odd_cat, scenes])
    others = {
        "cat": np.concatenate([_cluster(rng, cat, 200), _cluster(rng, _near(cat, odd, 1.2), 5, spread=0.02)]),
        "dog": _cluster(rng, dog, 200),
    }
    assert clean_ranking(maybe).flagged[200]
    result = rank_outliers(maybe, others=others)
    assert np.flatnonzero(result.flagged).tolist() == list(range(201, 209))
    assert all(
        re.fullmatch(r"z \d+\.\d from the centre, far from every other collection", result.reasons[i])
        for i in range(201, 209)
    )
    assert result.reasons[200] == ""


def test_a_trained_classifier_for_the_collections_label_is_used(pets):
    from imgidx.search.classifier import train_classifier

    maybe, others = pets
    clf = train_classifier(
        np.concatenate([others["cat"], others["dog"]]), ["cat"] * 200 + ["dog"] * 200, test_size=0.2
    ).classifier
    # The label comes from the ally collection (`cat`), so a cat/dog classifier cleans `maybe_cat`.
    result = rank_outliers(maybe, others=others, classifier=clf)
    assert result.label == "cat"
    assert np.flatnonzero(result.flagged).tolist() == list(range(200, 210))
    assert (result.probability[200:] > 0.5).all() and (result.probability[:200] < 0.5).all()
    assert all(
        re.match(r"classifier says dog \(p (0\.[5-9]\d|1\.00)\); nearer to dog", r) for r in result.reasons[200:]
    )
    # Alone (no other collection in the index) it needs the label.
    alone = rank_outliers(maybe, classifier=clf, label="cat")
    assert alone.method == "index" and alone.rivals == ()
    assert np.flatnonzero(alone.flagged).tolist() == list(range(200, 210))
    assert rank_outliers(maybe, classifier=clf).method == "centroid"  # no label: nothing to compare with
    with pytest.raises(ValueError, match=r"label 'bird' is not one of the classifier's classes \['cat', 'dog'\]"):
        rank_outliers(maybe, classifier=clf, label="bird")


def test_rank_outliers_rejects_bad_input(pets):
    maybe, others = pets
    with pytest.raises(TypeError, match="collection 'dog' has 3 dimensions; this one has 64"):
        rank_outliers(maybe, others={"dog": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="collection 'dog' is empty"):
        rank_outliers(maybe, others={"dog": np.zeros((0, 64))})
    with pytest.raises(ValueError, match="k must be an integer >= 1; received 0"):
        rank_outliers(maybe, others=others, k=0)


def test_small_collections_cap_k():
    rng = np.random.default_rng(1)
    a, b = _centres(9, 2)
    result = rank_outliers(_cluster(rng, a, 3), others={"b": _cluster(rng, b, 2)}, k=10)
    assert result.k == 4 and not result.flagged.any()


def test_one_similarity_pass_gives_the_direct_knn_distances_and_votes(pets, monkeypatch):
    """The votes and the k-NN distances come from one float32 cosine product in row blocks; they must equal the
    direct computation: Euclidean distances between the rows as given (not unit here), votes among unit rows."""
    import imgidx.search.outliers as outliers

    maybe, others = pets
    rng = np.random.default_rng(3)
    maybe = maybe * rng.uniform(0.5, 2.0, (len(maybe), 1))  # norms vary: distances are not 2 - 2 cos
    others = {name: v * rng.uniform(0.5, 2.0, (len(v), 1)) for name, v in others.items()}
    monkeypatch.setattr(outliers, "_BLOCK_ROWS", 64)  # several blocks, a short last one
    rivals, k, n = ("dog",), 10, len(maybe)
    pool, norms = outliers._unit_rows([maybe, *others.values()])
    codes = outliers._codes(n, others, rivals)
    votes, top, knn = outliers._neighbours(pool, norms, n, codes, len(rivals), k, k)

    rest = np.concatenate(list(others.values()))
    d = np.linalg.norm(maybe[:, None, :] - rest[None, :, :], axis=2)
    np.testing.assert_allclose(knn, np.sort(d, axis=1)[:, :k].mean(axis=1), rtol=1e-5)
    unit = np.concatenate([maybe, rest])
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    cos = unit[:n] @ unit.T
    cos[np.arange(n), np.arange(n)] = -np.inf
    nearest = np.argsort(-cos, axis=1)[:, :k]
    np.testing.assert_array_equal(votes, (codes[nearest] >= 0).sum(axis=1))
    assert set(top) == {0}
    null = outliers._knn_distance(pool[n:], norms[n:], pool[n:], norms[n:], k + 1, skip_self=True)
    d = np.linalg.norm(rest[:, None, :] - rest[None, :, :], axis=2)
    np.testing.assert_allclose(null, np.sort(d, axis=1)[:, 1 : k + 1].mean(axis=1), rtol=1e-5)


def test_row_distances_equal_numpy_norm_bit_for_bit(monkeypatch):
    import imgidx.search.cleanup as cleanup

    rng = np.random.default_rng(5)
    x, c = rng.standard_normal((601, 70)), rng.standard_normal(70)
    for rows in (256, 7, 1000):  # blocks, a short last one, a single block
        monkeypatch.setattr(cleanup, "_DISTANCE_ROWS", rows)
        np.testing.assert_array_equal(cleanup.row_distances(x, c), np.linalg.norm(x - c, axis=1))
        x32 = x.astype(np.float32)  # as read from a store: cast to float64 exactly by the subtraction
        assert cleanup.row_distances(x32, c).tobytes() == np.linalg.norm(x32.astype(np.float64) - c, axis=1).tobytes()


def test_mean_rows_equals_the_float64_copys_mean_bit_for_bit():
    import imgidx.search.cleanup as cleanup

    rng = np.random.default_rng(6)
    for n, d in ((1, 3), (2, 1), (9, 7), (5000, 1), (3000, 2), (40, 16), (257, 64), (1000, 4096), (300, 5000)):
        x = (rng.standard_normal((n, d)) * rng.uniform(0.01, 100)).astype(np.float32)
        if n == 257:
            x = np.asfortranarray(x)  # not C-contiguous: the all-kept shortcut does not apply
        x[rng.random(x.shape) < 0.05] = -0.0  # -0.0 entries: the sums must start where the old ones start
        for keep in (np.ones(n, dtype=bool), rng.random(n) > 0.3, rng.random(n) > 0.97):
            if keep.any():
                old = x.astype(np.float64)[keep].mean(axis=0)
                assert cleanup.mean_rows(x, keep).tobytes() == old.tobytes()
                assert (
                    cleanup.mean_rows(x.astype(np.float16), keep).tobytes()
                    == x.astype(np.float16).astype(np.float64)[keep].mean(axis=0).tobytes()
                )
    x = rng.standard_normal((50, 32)).astype(np.float32)
    x[:, 3] = -0.0
    keep = rng.random(50) > 0.5
    assert cleanup.mean_rows(x, keep).tobytes() == x.astype(np.float64)[keep].mean(axis=0).tobytes()
    assert cleanup.mean_rows(x, keep)[3] == 0.0  # +0.0 or -0.0: the bytes above say it is the old one


def test_float32_input_ranks_exactly_as_its_float64_copy(cats_with_planted_dogs):
    """clean_ranking and rank_outliers no longer copy float32 rows to float64: the results are the same bits."""
    x32 = cats_with_planted_dogs.astype(np.float32)
    rng = np.random.default_rng(7)
    others = {"a": (x32[:50] + rng.standard_normal(x32[:50].shape)).astype(np.float32), "b": x32[100:180] * 2}
    for kwargs in ({}, {"drop": 5}, {"threshold": 2.5}, {"reference": x32[:40]}):
        a, b = clean_ranking(x32, **kwargs), clean_ranking(x32.astype(np.float64), **kwargs)
        for field in dataclasses.fields(a):
            assert np.asarray(getattr(a, field.name)).tobytes() == np.asarray(getattr(b, field.name)).tobytes()
    a = rank_outliers(x32, others=others)
    b = rank_outliers(x32.astype(np.float64), others={n: v.astype(np.float64) for n, v in others.items()})
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert (x.tobytes() == y.tobytes()) if isinstance(x, np.ndarray) else x == y, field.name


def test_largest_picks_the_columns_argpartition_picks():
    """Same set of columns per row as np.argpartition(-sims, k - 1)[:, :k], ties at the k-th value included."""
    import imgidx.search.outliers as outliers

    rng = np.random.default_rng(8)
    unit = _unit(rng.normal(size=(700, DIM)))
    sims = unit[:300] @ unit.T
    sims[np.arange(300), np.arange(300)] = -np.inf
    coarse = np.round(sims * 8) / 8  # many ties at the k-th value
    coarse[:5] = 0.0  # rows of one value
    coarse[5, ::2] = -0.0  # -0.0 ties 0.0
    same = np.full((20, 700), 0.5, dtype=np.float32)  # copies of one photo: every column ties the bar
    same[3, 9] = 0.7
    for s in (sims, coarse, sims[:, :150], coarse[:7], same):
        for k in (1, 3, 10, 40, 100):
            old = np.sort(np.argpartition(-s, k - 1, axis=1)[:, :k], axis=1)
            np.testing.assert_array_equal(np.sort(outliers._largest(s, k), axis=1), old)


def _old_mean_distance(sims, row_norms, col_norms, k, skip_self=False):
    """search.outliers._mean_distance as it was, on the whole block at once with a full partition."""
    sq = (row_norms[:, None] * col_norms[None, :]) * sims
    sq *= -2.0
    sq += row_norms[:, None] ** 2
    sq += col_norms[None, :] ** 2
    nearest = np.sort(np.partition(sq, k - 1, axis=1)[:, :k], axis=1)[:, 1 if skip_self else 0 :]
    return np.sqrt(np.maximum(nearest.astype(np.float64), 0.0)).mean(axis=1)


def test_mean_distance_equals_the_whole_block_computation_bit_for_bit(monkeypatch):
    import imgidx.search.outliers as outliers

    rng = np.random.default_rng(9)
    rows = rng.normal(size=(700, DIM)).astype(np.float32)
    rows[650:] = rows[:50]  # duplicates: distances of 0
    pool, norms = outliers._unit_rows([rows])
    sims = pool[:300] @ pool.T
    for sq_rows in (64, 7, 1000):  # blocks, a short last one, a single block
        monkeypatch.setattr(outliers, "_SQ_ROWS", sq_rows)
        for s, cols in ((sims[:, 300:], norms[300:]), (sims, norms), (sims[:, :100], norms[:100])):
            for k, skip in ((1, False), (10, False), (11, True), (40, True)):
                new = outliers._mean_distance(s, norms[:300], cols, k, skip)
                assert new.tobytes() == _old_mean_distance(s, norms[:300], cols, k, skip).tobytes()
    coarse = np.round(sims * 4) / 4  # many ties
    same = np.full((20, 700), 0.5, dtype=np.float32)  # every value ties the bar: numpy's partition
    same[3, 9] = 0.25
    for values in (coarse, same):
        for k in (1, 5, 30):
            expected = np.sort(np.partition(values, k - 1, axis=1)[:, :k], axis=1)
            assert outliers._smallest(values, k).tobytes() == expected.tobytes()


def test_neighbours_and_knn_distance_equal_the_old_computation_bit_for_bit(pets, monkeypatch):
    """Reused product buffers, the bar-filtered top k and the cache-sized k-NN distance blocks: same bits as
    the plain products, argpartition and whole-block distances they replace."""
    import imgidx.search.outliers as outliers

    maybe, others = pets
    rng = np.random.default_rng(10)
    maybe = np.concatenate([maybe, maybe[:20]])  # duplicates: tied cosines
    others = {name: (v * rng.uniform(0.5, 2.0, (len(v), 1))).astype(np.float32) for name, v in others.items()}
    monkeypatch.setattr(outliers, "_BLOCK_ROWS", 64)
    rivals, k, n = ("dog",), 10, len(maybe)
    pool, norms = outliers._unit_rows([maybe, *others.values()])
    codes = outliers._codes(n, others, rivals)
    votes, top, knn = outliers._neighbours(pool, norms, n, codes, len(rivals), k, k)

    old_votes, old_top, old_knn = np.zeros(n, dtype=np.int64), [0] * n, np.zeros(n)
    for start in range(0, n, 64):
        stop = min(start + 64, n)
        sims = pool[start:stop] @ pool.T
        old_knn[start:stop] = _old_mean_distance(sims[:, n:], norms[start:stop], norms[n:], k)
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        c = codes[np.argpartition(-sims, k - 1, axis=1)[:, :k]]
        old_votes[start:stop] = (c >= 0).sum(axis=1)
        old_top[start:stop] = np.stack([(c == r).sum(axis=1) for r in range(len(rivals))], axis=1).argmax(axis=1)
    assert votes.tobytes() == old_votes.tobytes() and top == old_top and knn.tobytes() == old_knn.tobytes()

    x, xn = pool[n + 5 : n + 150], norms[n + 5 : n + 150]
    null = outliers._knn_distance(x, xn, pool[n:], norms[n:], k + 1, skip_self=True)
    old = np.concatenate(
        [
            _old_mean_distance(x[s : s + 64] @ pool[n:].T, xn[s : s + 64], norms[n:], k + 1, True)
            for s in range(0, len(x), 64)
        ]
    )
    assert null.tobytes() == old.tobytes()


def test_unit_rows_equal_the_whole_pool_computation_bit_for_bit(monkeypatch):
    import imgidx.search.outliers as outliers

    rng = np.random.default_rng(11)
    parts = [
        rng.normal(size=(300, DIM)).astype(np.float32) * 3,
        rng.normal(size=(1, DIM)),  # float64: rounded to float32 as np.asarray(dtype=float32) does
        np.zeros((2, DIM), dtype=np.float32),  # norm 0
        rng.normal(size=(517, DIM)).astype(np.float16),
    ]
    pool = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])  # the old computation
    norms = np.linalg.norm(pool, axis=1, keepdims=True)
    pool /= np.maximum(norms, 1e-12)
    for rows in (256, 1, 7, 5000):
        monkeypatch.setattr(outliers, "_UNIT_ROWS", rows)
        new_pool, new_norms = outliers._unit_rows(parts)
        assert new_pool.tobytes() == pool.tobytes() and new_norms.tobytes() == norms[:, 0].tobytes()


def test_unit_rows_in_place_equal_the_copy_bit_for_bit():
    """Consecutive float32 rows of one array become the pool themselves (no 262 MB copy at a million photos):
    same bits as the copy; anything else is copied and left as it was."""
    import imgidx.search.outliers as outliers

    rng = np.random.default_rng(12)
    whole = rng.normal(size=(700, DIM)).astype(np.float32) * rng.uniform(0.1, 3, (700, 1)).astype(np.float32)
    whole[5] = 0.0  # norm 0
    expected = outliers._unit_rows([whole.copy()])
    for cuts in ((0, 300, 301, 700), (0, 700), (0, 1, 699, 700)):
        rows = whole.copy()
        parts = [rows[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        pool, norms = outliers._unit_rows(parts, in_place=True)
        assert np.shares_memory(pool, rows) and pool.tobytes() == expected[0].tobytes()
        assert norms.tobytes() == expected[1].tobytes()
    inner = whole.copy()
    pool, _ = outliers._unit_rows([inner[100:200], inner[200:250]], in_place=True)  # rows inside a larger array
    assert pool.base is inner and pool.tobytes() == outliers._unit_rows([whole[100:250].copy()])[0].tobytes()
    assert inner[:100].tobytes() == whole[:100].tobytes() and inner[250:].tobytes() == whole[250:].tobytes()
    rows = whole.copy()
    for parts in (
        [rows[300:], rows[:300]],  # not in order
        [rows[:300], rows[301:]],  # a gap
        [rows[:300], rows[300:].astype(np.float64)],  # another array
        [rows[:, : DIM - 1]],  # not whole rows
        [rows],  # not a view at all
    ):
        assert outliers._consecutive(parts) is None
        pool, _ = outliers._unit_rows(parts, in_place=True)
        assert not np.shares_memory(pool, rows)
    assert rows.tobytes() == whole.tobytes()  # copied: the inputs are as they were


def test_overwriting_the_inputs_gives_the_same_result_bit_for_bit(pets, monkeypatch):
    """rank_outliers(..., overwrite=True) on consecutive rows of one array (as index_inputs reads them): its unit
    rows, then the null sample's rows and products, in that memory; every field the same bits as on copies."""
    import imgidx.search.outliers as outliers

    maybe, others = pets
    rng = np.random.default_rng(13)
    others = {name: (v * rng.uniform(0.5, 2.0, (len(v), 1))).astype(np.float32) for name, v in others.items()}
    monkeypatch.setattr(outliers, "_BLOCK_ROWS", 64)
    for null_sample in (outliers.NULL_SAMPLE, 50, len(maybe) + 1):  # all, some, more than this collection's rows
        monkeypatch.setattr(outliers, "NULL_SAMPLE", null_sample)
        expected = rank_outliers(maybe.astype(np.float32), others={n: v.copy() for n, v in others.items()})
        rows = np.concatenate([maybe.astype(np.float32), *others.values()])
        sizes = np.cumsum([0, len(maybe), *(len(v) for v in others.values())])
        views = [rows[a:b] for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        result = rank_outliers(views[0], others=dict(zip(others, views[1:], strict=True)), overwrite=True)
        assert not np.array_equal(rows[: len(maybe)], maybe.astype(np.float32))  # the memory was used
        for field in dataclasses.fields(result):
            x, y = getattr(result, field.name), getattr(expected, field.name)
            assert (x.tobytes() == y.tobytes()) if isinstance(x, np.ndarray) else x == y, field.name


def test_knn_distance_in_a_reused_buffer_equals_a_fresh_one_bit_for_bit(monkeypatch):
    import imgidx.search.outliers as outliers

    rng = np.random.default_rng(14)
    rows = rng.normal(size=(500, DIM)).astype(np.float32) * 2
    rows[450:] = rows[:50]  # duplicates
    pool, norms = outliers._unit_rows([rows])
    monkeypatch.setattr(outliers, "_BLOCK_ROWS", 64)
    sample = 200 + rng.permutation(300)[:130]
    fresh = outliers._knn_distance(pool[sample], norms[sample], pool[200:], norms[200:], 11, skip_self=True)
    scratch = pool.copy()
    taken = outliers._take_rows(scratch, sample, scratch[:130])
    assert np.shares_memory(taken, scratch) and taken.tobytes() == pool[sample].tobytes()
    for buffer in (np.full((64, 500), np.nan, np.float32), np.full(64 * 300, np.inf, np.float32), np.empty((3, 3))):
        new = outliers._knn_distance(
            taken, norms[sample], scratch[200:], norms[200:], 11, skip_self=True, buffer=buffer
        )
        assert new.tobytes() == fresh.tobytes()
