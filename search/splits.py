"""Train/val/test splits stratified per label that never separate two photos of one duplicate group.

The unit of assignment is a duplicate group (or a lone photo): every membership of every photo of a unit goes to
one split, so the same picture can never be trained on and tested on (a "leaky split"). Units are visited in
an order fixed by a hash of (seed, unit) - not by input order - and each goes to the split whose per-label
quotas it helps most, so the counts per label come out at the requested fractions (to within a group's size)
and the same input with the same seed always gives the same splits.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from imgidx.indexer.errors import ConfigError

NAMES = {1: ("train",), 2: ("train", "test"), 3: ("train", "val", "test")}


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1): one to three non-negative fractions that sum to 1."""
    try:
        parts = [float(p) for p in text.split(",") if p.strip()] if isinstance(text, str) else [float(p) for p in text]
    except ValueError:
        raise ConfigError(f"split must be fractions like 0.8,0.1,0.1; received {text!r}") from None
    if not 1 <= len(parts) <= 3 or any(not (0 <= p <= 1) for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise ConfigError(
            f"split takes 1 to 3 fractions between 0 and 1 that sum to 1 (train[,val],test); received {text!r}"
        )
    return tuple(parts)


def split_names(fractions: Sequence[float]) -> tuple[str, ...]:
    return NAMES[len(fractions)]


def assign_splits(
    photo_ids: Sequence[int],
    labels: Sequence[str],
    groups: Sequence[int | None],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
) -> list[str]:
    """The split name of each row (a photo's membership in one label; a photo may have several rows).

    Rows with the same photo id or the same non-None group go to the same split."""
    if not (len(photo_ids) == len(labels) == len(groups)):
        raise ConfigError("photo_ids, labels and groups must have the same length")
    fractions = parse_fractions(fractions)
    names = split_names(fractions)
    # units: union of "same photo" and "same group"
    unit_of_photo: dict[int, tuple] = {}
    for pid, grp in zip(photo_ids, groups, strict=True):
        key = ("g", grp) if grp is not None else ("p", pid)
        if unit_of_photo.setdefault(pid, key) != key and key[0] == "g":
            unit_of_photo[pid] = key  # a photo with a group somewhere joins the group everywhere
    rows_of: dict[tuple, list[int]] = defaultdict(list)
    for r, pid in enumerate(photo_ids):
        rows_of[unit_of_photo[pid]].append(r)
    # quotas per label and split (largest remainder, so they sum to the label's count)
    per_label: dict[str, int] = defaultdict(int)
    for lab in labels:
        per_label[lab] += 1
    target = {lab: _quotas(n, fractions) for lab, n in per_label.items()}
    have = {lab: [0] * len(names) for lab in per_label}

    def order(unit: tuple) -> bytes:
        return hashlib.sha256(f"{seed}:{unit[0]}:{unit[1]}".encode()).digest()

    # larger units first (they are the hard ones to fit), then the seeded hash order
    units = sorted(rows_of, key=lambda u: (-len(rows_of[u]), order(u)))
    out = [""] * len(labels)
    for unit in units:
        rows = rows_of[unit]
        need: dict[str, int] = defaultdict(int)
        for r in rows:
            need[labels[r]] += 1
        # the split with the most room left, as a share of the label's size (ties: the earlier split); a plain
        # loop over the splits, not max() with a key (no lambda and generator per split and unit)
        best, most = 0, None
        for s in range(len(names)):
            room = sum([(target[lab][s] - have[lab][s]) / per_label[lab] * n for lab, n in need.items()])
            if most is None or room > most:
                best, most = s, room
        for lab, n in need.items():
            have[lab][best] += n
        for r in rows:
            out[r] = names[best]
    return out


def _quotas(n: int, fractions: Sequence[float]) -> list[int]:
    raw = [n * f for f in fractions]
    base = [int(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in by_remainder[: n - sum(base)]:
        base[i] += 1
    return base
