"""audit on an open Store: the model-free label-noise check across collections (search/audit.py)."""

from __future__ import annotations

from collections.abc import Sequence

from imgidx.indexer.errors import InvalidArgument
from imgidx.indexer.store import Store

from ..results import AuditReport, AuditRow
from .queries import describe, labelled_ids, two_or_more


def audit(store: Store, collections: Sequence[str], k: int = 10) -> AuditReport:
    """Model-free label-noise check: photos closer to another collection, or whose neighbours are another's."""
    from imgidx.search.audit import audit_labels

    names = two_or_more(collections, "an audit")
    ids, labels = labelled_ids(store, names)
    try:
        result = audit_labels(store.vectors(ids), labels, k=k)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(str(e)) from None
    meta = {h.id: h for h in describe(store, [(pid, 0.0) for pid in set(ids)])}
    rows = tuple(
        AuditRow(
            id=ids[p.index],
            source_id=meta[ids[p.index]].source_id,
            label=p.label,
            suggested=p.suggested,
            flagged=p.flagged,
            margin=round(float(p.margin), 6),
            agreement=round(float(p.agreement), 3),
            reasons=tuple(p.reasons),
            title=meta[ids[p.index]].title,
        )
        for p in result.photos
    )
    return AuditReport(names, result.k, rows)
