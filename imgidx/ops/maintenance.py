"""Maintenance on an open Store: what the index holds (`info`), its check against its metadata and files (`verify`)
and what can be rebuilt from the stored vectors and files (`repair`), and the FAISS index rebuilt as another kind
(`reindex`). verify's checks themselves are indexer/verify.py's."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from imgidx.indexer import ann
from imgidx.indexer.errors import EmptyIndex, InvalidArgument
from imgidx.indexer.store import Store

from ..results import IndexInfo, ReindexReport

if TYPE_CHECKING:
    from imgidx.indexer.verify import Report as VerifyReport


def info(store: Store) -> IndexInfo:
    """Collections and counts, the model stamp, the index kind and size, failures, the int8 calibration."""
    counts = store.counts()
    stamp = store.stamp
    return IndexInfo(
        home=str(store.home),
        photos=counts["photos"],
        collections=counts["collections"],
        clean=counts["clean"],
        stamp=stamp.as_dict() if stamp else None,
        stamp_text=stamp.describe() if stamp else None,
        index={**store.describe_index(), "requested": store.index_kind},
        states=counts["states"],
        failures=counts["failures"],
        failed=tuple(dict(r) for r in store.failures()),
        calibration=_json_or_none(store.meta("int8_calibration")),
    )


def verify(store: Store) -> VerifyReport:
    """The index checked against its metadata and files; changes nothing (a running build explains some lag)."""
    from imgidx.indexer import verify as checks
    from imgidx.indexer.compose import build_running

    return checks.verify(store, build_running=build_running(store.home))


def repair(store: Store) -> VerifyReport:
    """Rebuild what can be rebuilt (a writable store under the build lock); the report after it, with what was done."""
    from imgidx.indexer import verify as checks

    report = checks.verify(store)
    if any(f.error and f.repairable for f in report.findings):
        done = checks.repair(store, report)
        report = replace(checks.verify(store), repaired=tuple(done))
    return report


def check_kind(kind: str) -> str:
    """An index kind reindex can build (ann.CHOICES)."""
    if kind not in ann.CHOICES:
        raise InvalidArgument(f"the index kind must be one of {'|'.join(ann.CHOICES)}; received {kind!r}")
    return kind


def reindex(store: Store, kind: str = "auto") -> ReindexReport:
    """The FAISS index rebuilt from the exact stored vectors as `kind` (a writable store under the build lock)."""
    check_kind(kind)
    if store.stamp is None:
        raise EmptyIndex(f"the index in {store.home} is empty; build it first")
    before = store.describe_index()  # a lost index is not trained here only to be replaced
    start = time.monotonic()
    store.rebuild_index(kind)
    seconds = time.monotonic() - start
    after = ann.describe(store.index)
    recall = ann.recall_at_k(store.index, store.vector_ids(), store.vectors) if after["kind"] != "flat" else 1.0
    return ReindexReport(before, {**after, "requested": kind}, recall, seconds)


def _json_or_none(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
