"""L2-regularised logistic regression on stored vectors, fitted by L-BFGS in numpy.

The objective is scikit-learn's ``LogisticRegression(C=1.0)`` with its default lbfgs solver: the mean log loss
(binomial for two classes, multinomial for more) plus ``||W||^2 / (2·C·n)``, the intercept not penalised, and
the same stopping rule (largest gradient entry ``<= tol``, or a relative decrease of the objective below
``64·eps``). We fit it ourselves because importing scikit-learn costs about as much as the whole rest of
``imgidx train`` (it imports scipy.stats and pandas); ``tests/test_logistic.py`` checks the coefficients and
probabilities against scikit-learn's.

The objective is strongly convex (the L2 term), so every step's curvature ``y·s`` is positive and a backtracking
(Armijo) line search is enough for L-BFGS: no Wolfe curvature test is needed to keep the update positive
definite. Products with the data run in float32 (the vectors are stored that way; the loss, gradient and
parameters are float64).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

_MEMORY = 10  # (s, y) pairs kept, scipy's L-BFGS-B default (maxcor)
_ARMIJO = 1e-4
_MAX_HALVINGS = 50  # scikit-learn allows lbfgs 50 line-search steps (maxls)
_FTOL = 64 * np.finfo(float).eps


class LogisticModel:
    """A fitted model with the attributes and methods of scikit-learn's estimator that imgidx uses:
    ``classes_``, ``n_features_in_``, ``coef_``, ``intercept_``, ``predict_proba``, ``decision_function``."""

    def __init__(self, classes: npt.NDArray[np.str_], coef: npt.NDArray[np.float64], intercept, n_iter: int = 0):
        self.classes_ = np.asarray(classes)
        self.coef_ = np.asarray(coef, dtype=np.float64)  # (1, d) for two classes, else (n_classes, d)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.n_features_in_ = int(self.coef_.shape[1])
        self.n_iter_ = int(n_iter)

    def decision_function(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        z = np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_
        return z[:, 0] if len(self.classes_) == 2 else z

    def predict_proba(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        z = self.decision_function(x)
        if len(self.classes_) == 2:
            p = _sigmoid(z)
            return np.stack([1.0 - p, p], axis=1)
        return _softmax(z)

    def predict(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.str_]:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]

    def __repr__(self) -> str:
        return f"LogisticModel(classes={self.classes_.tolist()}, dim={self.n_features_in_})"


@dataclass(frozen=True)
class _Problem:
    x: npt.NDArray[np.float32]  # (n, d)
    y: npt.NDArray[np.intp]  # class index per row
    k: int  # parameter rows: 1 for two classes (binomial), else the number of classes
    alpha: float  # L2 strength on the mean loss: 1 / (C·n)

    def loss_grad(self, theta: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        n, d = self.x.shape
        w = theta.reshape(self.k, d + 1)
        z = (self.x @ w[:, :d].T.astype(np.float32)).astype(np.float64) + w[:, d]
        if self.k == 1:
            t = (self.y == 1).astype(np.float64)
            zz = z[:, 0]
            loss = float(np.logaddexp(0.0, zz).sum() - zz[t == 1].sum())
            r = (_sigmoid(zz) - t)[:, None]
        else:
            top = z.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
            loss = float(lse.sum() - z[np.arange(n), self.y].sum())
            r = np.exp(z - lse[:, None])
            r[np.arange(n), self.y] -= 1.0
        grad = np.empty_like(w)
        grad[:, :d] = (r.T.astype(np.float32) @ self.x).astype(np.float64) / n + self.alpha * w[:, :d]
        grad[:, d] = r.sum(axis=0) / n
        weights = w[:, :d]
        return loss / n + 0.5 * self.alpha * float(np.vdot(weights, weights)), grad.ravel()


def fit_logistic(
    x: npt.NDArray[np.floating],
    labels: npt.NDArray[np.str_],
    *,
    c: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> LogisticModel:
    """Fit on rows ``x`` (n, d) with string ``labels`` (at least two distinct); classes come out sorted."""
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"logistic regression needs at least 2 classes; received {classes.tolist()}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = 1 if len(classes) == 2 else len(classes)
    problem = _Problem(x, y, k, 1.0 / (c * len(x)))
    theta, n_iter = _lbfgs(problem.loss_grad, np.zeros(k * (x.shape[1] + 1)), tol=tol, max_iter=max_iter)
    w = theta.reshape(k, x.shape[1] + 1)
    return LogisticModel(classes, w[:, :-1], w[:, -1], n_iter)


def _lbfgs(fg, theta: npt.NDArray[np.float64], *, tol: float, max_iter: int) -> tuple[npt.NDArray[np.float64], int]:
    """Minimise a smooth strongly convex function; returns (argmin, iterations)."""
    f, g = fg(theta)
    pairs: deque[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]] = deque(maxlen=_MEMORY)
    for it in range(max_iter):
        if np.abs(g).max() <= tol:
            return theta, it
        p = -_inverse_hessian_times(g, pairs)
        slope = float(g @ p)
        # the first step, with no curvature known yet, moves by at most one unit (as L-BFGS-B does)
        step = min(1.0, 1.0 / float(np.linalg.norm(p))) if not pairs else 1.0
        for _ in range(_MAX_HALVINGS):
            new_theta = theta + step * p
            new_f, new_g = fg(new_theta)
            if new_f <= f + _ARMIJO * step * slope:
                break
            step *= 0.5
        else:
            # no step lowers the objective: it is at its minimum to within float rounding
            return theta, it
        s, y = new_theta - theta, new_g - g
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):
            pairs.append((s, y, 1.0 / sy))
        decrease = f - new_f
        theta, f, g = new_theta, new_f, new_g
        if decrease <= _FTOL * max(abs(f), abs(f + decrease), 1.0):
            return theta, it + 1
    logger.warning("logistic regression stopped after %d iterations without converging (tol %g)", max_iter, tol)
    return theta, max_iter


def _inverse_hessian_times(
    g: npt.NDArray[np.float64], pairs: deque[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]]
) -> npt.NDArray[np.float64]:
    """The L-BFGS two-loop recursion: the inverse-Hessian estimate from the stored pairs times g."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, rho = pairs[-1]
        q *= 1.0 / (rho * float(y @ y))  # gamma = s·y / y·y
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        b = rho * float(y @ q)
        q += (a - b) * s
    return q


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.exp(-np.logaddexp(0.0, -z))


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
