"""The held-out split of ``imgidx train``: stratified by label, reproducible from a seed.

It is scikit-learn's ``train_test_split(rows, test_size=t, random_state=seed, stratify=labels)`` (its
StratifiedShuffleSplit, one split), step for step with the same random draws, so that classifiers trained
before imgidx stopped importing scikit-learn for ``train`` keep their test photos; ``tests/test_logistic.py``
compares the two.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def stratified_split(
    labels: npt.NDArray[np.str_], *, test_size: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(train rows, test rows): ceil(test_size·n) test rows, each label in proportion, both in shuffled order.
    Every label needs 2 rows and each side one row per label (the caller checks and says what to do)."""
    n = len(labels)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    _, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(y, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    train_per_class = _approximate_mode(counts, n_train, rng)
    test_per_class = _approximate_mode(counts - train_per_class, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for rows, n_tr, n_te, count in zip(by_class, train_per_class, test_per_class, counts, strict=True):
        shuffled = rows.take(rng.permutation(count), mode="clip")
        train.extend(shuffled[:n_tr])
        test.extend(shuffled[n_tr : n_tr + n_te])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(counts: npt.NDArray[np.intp], draws: int, rng: np.random.RandomState) -> npt.NDArray[np.intp]:
    """Draws per class, proportional to ``counts`` and summing to ``draws``: the floors, then one more for the
    classes with the largest remainders (ties broken by ``rng``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add = min(len(tied), need)
            floored[rng.choice(tied, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)
