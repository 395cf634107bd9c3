"""A person's review decisions teach the clean cut: reviewed photos keep their decision, the others are re-judged.

The clean cut (search/outliers.py) gives every photo of a collection an evidence score (> 1 = flagged). A review
says, for one photo, what the cut should have said. One decision overriding one photo teaches nothing about the
others, yet 16 reviewed dogs among cats say exactly what a dog looks like. So the decisions are labels:

* **The probe.** A logistic model of P(flag) fitted on the reviewed photos, with the existing evidence as its
  offset: ``logit = a·o + b + f·w`` where ``o = PRIOR_SLOPE·(score − 1)`` is the evidence (0 at the cut), ``f`` the
  photo's vector (centred on the collection, unit mean square) and ``w`` the direction the decisions teach.
* **The prior.** Penalties pull ``w`` and ``b`` to 0 and ``a`` to 1: with no review the probe is the cut itself
  (flagged exactly where score > 1); each decision adds one term of likelihood against fixed penalties, so 2
  decisions move the cut a little and 30 a lot.
* **Reviewed photos** keep their decision whatever the probe says.

What to review next (:meth:`Teacher.next`): the unreviewed photos whose decision is the least certain
(``min(p, 1 − p)``, uncertainty sampling: a review there fixes a wrong decision with the highest probability and
moves the probe the most), spread over the collection (each pick's certainty gain is discounted by its cosine
similarity to photos picked before it, so one batch is not ten copies of one uncertain look).

Pure numpy (+ scipy's L-BFGS): arrays in, a :class:`Judgement` out. The vectors and the evidence stay in the
:class:`Teacher` between decisions; a decision refits only the probe (a few dozen reviewed rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Logit per unit of evidence score around the cut: a score of 2 (twice the cut's evidence) is P(flag) 0.95.
PRIOR_SLOPE = 3.0
# Penalties of the prior (features scaled to unit mean square): on the probe's direction, on a's distance from 1
# and on the bias. Chosen with the simulated reviewer on the real photos (bench/review_loop.py, 300 cats + 20 dogs
# and 320 photos with 5 % and 10 % dogs): a weak pull on the direction (0.01-0.1 all reach the bar after 30
# reviews in most draws; 1 and more need 50), a strong one on the cut's own scale and bias, so that a few
# reviews near the cut do not undo what the evidence says of the rest.
L2_W = 0.05
L2_A = 30.0
L2_B = 30.0
STRATEGY = (
    "uncertainty near the cut (min(p, 1 - p) of P(flag), reviews included) spread over the collection (each "
    "pick discounted by its cosine to the photos picked before it)"
)
# Candidates per photo asked for that the diverse pick chooses among (the most uncertain ones).
POOL_PER_PICK = 8


@dataclass(frozen=True)
class Judgement:
    """One collection re-judged with its reviews (rows aligned with the Teacher's vectors)."""

    probability: npt.NDArray[np.float64]  # P(flag): 1/0 for reviewed photos
    flagged: npt.NDArray[np.bool_]
    reviewed: npt.NDArray[np.bool_]
    by_reviews: npt.NDArray[np.bool_]  # unreviewed photos whose decision the reviews changed from the cut's
    n_flagged: int  # reviewed photos flagged
    n_kept: int  # reviewed photos kept

    def reason(self, row: int) -> str:
        """What the reviews say of an unreviewed photo ("" for a reviewed one: its decision is the reason)."""
        if self.reviewed[row]:
            return ""
        p = float(self.probability[row])
        if self.flagged[row]:
            like = f"like the {self.n_flagged} photos you flagged" if self.n_flagged else "reviews"
            return f"{like} (p {p:.2f})"
        like = f"like the {self.n_kept} photos you kept" if self.n_kept else "reviews"
        return f"{like} (p {1 - p:.2f})"


class Teacher:
    """The vectors and the cut's evidence of one collection, kept while a person reviews it."""

    def __init__(self, vectors: npt.NDArray[np.floating], score: npt.NDArray[np.floating]):
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(score):
            raise ValueError(f"vectors {x.shape} and scores {np.shape(score)} do not match")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1)
        f = x - x.mean(axis=0)
        scale = float(np.sqrt((f * f).sum(axis=1).mean())) or 1.0
        self.features = f / scale
        s = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0, posinf=5.0, neginf=-5.0)
        self.offset = PRIOR_SLOPE * (np.clip(s, -5.0, 5.0) - 1.0)
        self.cut = self.offset > 0  # the cut's own decision (score > 1)
        self._last: tuple[frozenset, Judgement] | None = None

    def __len__(self) -> int:
        return len(self.offset)

    def judge(self, decisions: Mapping[int, bool]) -> Judgement:
        """Re-judge every photo with ``decisions`` (row → True for a flag, False for a keep)."""
        key = frozenset((int(r), bool(f)) for r, f in decisions.items())
        if self._last is not None and self._last[0] == key:
            return self._last[1]  # the page asks for the ranking and the queue after one decision
        n = len(self)
        rows = np.array(sorted(decisions), dtype=np.intp)
        if len(rows) and (rows[0] < 0 or rows[-1] >= n):
            raise ValueError(f"review rows must lie in 0..{n - 1}")
        y = np.array([bool(decisions[int(r)]) for r in rows], dtype=np.float64)
        logit = self.offset
        if len(rows):
            a, b, w = _fit(self.features[rows], self.offset[rows], y)
            logit = a * self.offset + b + self.features @ w.astype(np.float32)
        p = _sigmoid(logit)
        reviewed = np.zeros(n, dtype=bool)
        reviewed[rows] = True
        p[rows] = y
        flagged = p > 0.5
        judged = Judgement(
            probability=p,
            flagged=flagged,
            reviewed=reviewed,
            by_reviews=~reviewed & (flagged != self.cut),
            n_flagged=int(y.sum()),
            n_kept=int(len(y) - y.sum()),
        )
        self._last = (key, judged)
        return judged

    def next(self, judgement: Judgement, n: int) -> list[int]:
        """The ``n`` unreviewed rows to review next, most useful first (see the module docstring)."""
        if n < 1:
            return []
        open_rows = np.flatnonzero(~judgement.reviewed)
        if not len(open_rows):
            return []
        p = judgement.probability[open_rows]
        doubt = np.minimum(p, 1 - p)
        pool = open_rows[np.argsort(-doubt, kind="stable")[: n * POOL_PER_PICK]]
        gain = np.minimum(judgement.probability[pool], 1 - judgement.probability[pool]) + 1e-9
        unit = self.features[pool]
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        near = np.zeros(len(pool))  # each candidate's largest cosine to the rows picked so far
        picked: list[int] = []
        for _ in range(min(n, len(pool))):
            j = int(np.argmax(np.where(np.isin(pool, picked), -np.inf, gain * (1 - near))))
            picked.append(int(pool[j]))
            near = np.maximum(near, np.clip(unit @ unit[j], 0, 1))
        return picked


def _sigmoid(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 0.5 * (1 + np.tanh(0.5 * t))


def _fit(
    f: npt.NDArray[np.float32], o: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[float, float, npt.NDArray[np.float64]]:
    """(a, b, w) of the penalised offset logistic regression on the reviewed rows (see the module docstring).

    Newton's method on the smaller of two equal problems: with fewer reviews than dimensions, in the span of the
    reviewed vectors (w = f.T @ alpha: an L2 penalty puts the optimum there), so a step solves m + 2 equations
    whatever the dimension; else on w itself."""
    m, d = f.shape
    f64 = f.astype(np.float64)
    head = np.column_stack([o, np.ones(m)])
    if m <= d:
        gram = f64 @ f64.T
        design = np.hstack([head, gram])
        penalty = np.zeros((m + 2, m + 2))
        penalty[2:, 2:] = L2_W * gram + 1e-9 * np.eye(m)  # w.w = alpha' G alpha; the ridge keeps it solvable
    else:
        design = np.hstack([head, f64])
        penalty = np.diag(np.r_[0.0, 0.0, np.full(d, L2_W)])
    penalty[0, 0], penalty[1, 1] = L2_A, L2_B
    prior = np.zeros(design.shape[1])
    prior[0] = 1.0  # a = 1: the cut as it is
    theta = _newton(design, y, penalty, prior)
    a, b, rest = float(theta[0]), float(theta[1]), theta[2:]
    return a, b, (f64.T @ rest if m <= d else rest)


def _newton(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    penalty: npt.NDArray[np.float64],
    prior: npt.NDArray[np.float64],
    iterations: int = 50,
) -> npt.NDArray[np.float64]:
    """argmin of sum(log(1 + e^t) - y t) + (theta - prior)' P (theta - prior) / 2 with t = x theta (convex): Newton
    steps, halved while they do not lower the objective."""

    def objective(theta: npt.NDArray[np.float64]) -> float:
        t = x @ theta
        gap = theta - prior
        return float((np.logaddexp(0, t) - y * t).sum() + 0.5 * gap @ penalty @ gap)

    theta = prior.copy()
    value = objective(theta)
    for _ in range(iterations):
        p = _sigmoid(x @ theta)
        grad = x.T @ (p - y) + penalty @ (theta - prior)
        hessian = (x.T * (p * (1 - p))) @ x + penalty
        step = np.linalg.lstsq(hessian, grad, rcond=None)[0]
        for _ in range(30):
            candidate = theta - step
            new = objective(candidate)
            if new <= value:
                break
            step = step / 2
        else:
            break
        done = value - new < 1e-10 * max(1.0, abs(value))
        theta, value = candidate, new
        if done:
            break
    return theta
