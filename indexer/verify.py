"""`imgidx verify`: check the FAISS file against SQLite (the source of truth) and the files on disk; `--repair`
rebuilds what can be rebuilt from the stored vectors and files (never from the network, never with the model),
through the Store's own index code, so every kind (flat, IVF, HNSW, float16 or not) is checked and kept.

Errors make `verify` exit 1; warnings do not (a moved source folder leaves vectors that still work). After a
killed build the index file is legitimately behind SQLite: that is reported (the next build or a repair catches
up), and while a build runs it is only a warning; a missing file with every vector in SQLite is only a warning
(the Store rebuilds it from them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ann, layout
from .store import Store, vectorfile

REPORT_IDS = 20  # example ids per finding
UNIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str
    ids: tuple = ()
    repairable: bool = True
    error: bool = True

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "severity": "error" if self.error else "warning",
            "count": len(self.ids),
            "detail": self.detail,
            "repairable": self.repairable,
            "examples": list(self.ids[:REPORT_IDS]),
        }


@dataclass(frozen=True)
class Report:
    """What verify found (imgidx.VerifyReport); `repaired`: what a repair did before this check."""

    home: str
    checked: dict = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    repaired: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(f.error for f in self.findings)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "home": self.home,
            "checked": dict(self.checked),
            "problems": [f.as_dict() for f in self.findings],
            "repaired": list(self.repaired),
        }


@dataclass
class _Draft:
    """The report while the checks fill it in."""

    home: str
    checked: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, ids: list, detail: str, *, repairable: bool = True, error: bool = True) -> None:
        if ids:
            self.findings.append(Finding(kind, f"{len(ids)} {detail}", tuple(ids), repairable, error))

    def done(self) -> Report:
        return Report(self.home, dict(self.checked), tuple(self.findings))


def verify(store: Store, *, build_running: bool = False) -> Report:
    """Check everything; never changes anything."""
    report = _Draft(str(store.home))
    quick = store.quick_check()
    if quick != ["ok"]:
        detail = "; ".join(quick[:3])
        report.add("sqlite_corrupt", [0], f"SQLite integrity problem(s): {detail}", repairable=False)
        return report.done()  # nothing below can be trusted; see SECURITY.md / README for recovery
    dim = store.stamp.dim if store.stamp else None
    vector_ids = _check_vectors(store, dim, report)
    _check_states(store, report)
    _check_index(store, vector_ids, dim, report, build_running)
    _check_files(store, report, build_running)
    report.checked["photos"] = store.photo_count()
    report.checked["vectors"] = len(vector_ids)
    return report.done()


def _check_vectors(store: Store, dim: int | None, report: _Draft) -> list[int]:
    """The vector file against the slots SQLite committed: its dtype, its length, and every committed row
    (finite, unit length), read in slot order a chunk at a time (memory stays small at a million photos)."""
    dtype = store.vector_dtype
    if dtype not in vectorfile.DTYPES:
        report.add("vector_dtype", [dtype], f"unknown vector dtype in the store's meta (not {vectorfile.DTYPES})")
        return []
    rows = store.vector_slots()
    if dim is None:
        report.add("vector_bad_size", [pid for pid, _ in rows], "stored vectors but no model stamp (dimension)")
        return []
    vf = vectorfile.VectorFile(layout.vectors_file(store.home), dim, dtype)
    on_disk, committed = vf.rows(), store.committed_slots()
    report.checked["vector_file"] = {"dtype": dtype, "rows": on_disk, "committed": committed}
    tail = vf.size() - committed * vf.row_bytes
    if tail > 0:  # a build killed between its append and its commit; the next append overwrites it
        report.add(
            "vector_file_tail",
            [f"{tail} bytes"],
            f"bytes beyond the committed vectors in {vf.path.name} (an interrupted build; repair cuts them)",
            error=False,
        )
    missing, not_unit, good = [], [], []
    for start in range(0, len(rows), 4096):
        part = rows[start : start + 4096]
        present = [(pid, slot) for pid, slot in part if slot < on_disk]
        missing += [pid for pid, slot in part if slot >= on_disk]
        if not present:
            continue
        v = vf.read([slot for _, slot in present])
        ok = np.isfinite(v).all(axis=1) & (np.abs(np.linalg.norm(v, axis=1) - 1.0) <= UNIT_TOLERANCE)
        not_unit += [pid for (pid, _), o in zip(present, ok, strict=True) if not o]
        good += [pid for (pid, _), o in zip(present, ok, strict=True) if o]
    report.add("vector_missing", missing, f"stored vectors lie beyond the end of {vf.path.name} (it was cut short)")
    report.add("vector_not_unit", not_unit, "stored vectors are not finite unit vectors")
    orphans = store.check_ids("vector_without_photo")
    report.add("vector_without_photo", orphans, "vectors have no photo row (no metadata)")
    orphan_set = set(orphans)
    return sorted(i for i in good if i not in orphan_set)


def _check_states(store: Store, report: _Draft) -> None:
    for kind, detail in (
        ("photo_without_vector", "photos are marked embedded/indexed but have no stored vector"),
        ("state_behind_vector", "photos have a stored vector but are not marked embedded/indexed"),
        ("collection_without_photo", "collection rows point at no photo"),
    ):
        report.add(kind, store.check_ids(kind), detail)


def _check_index(store: Store, vector_ids: list[int], dim: int | None, report: _Draft, running: bool) -> None:
    index = store.faiss.read_file()  # the file as it is, not the Store's caught-up copy
    if index is None:
        if vector_ids:
            exists = store.index_path.exists()
            if exists:
                detail = f"vectors are not searchable: {store.index_path} is unreadable"
            else:  # e.g. a first build stopped by a full disk: every vector is in SQLite, the file is derived
                detail = f"vectors are in SQLite but {store.index_path} is missing (it is rebuilt from them)"
            report.add("index_missing", vector_ids, detail, error=exists)
        return
    report.checked["index_size"] = int(index.ntotal)
    if dim is not None and index.d != dim:
        report.add("index_wrong_dim", vector_ids or [0], f"vectors: the index file has dimension {index.d}, not {dim}")
        return
    requested, kind = store.index_kind, ann.kind_of(index)
    if requested != "auto" and kind != requested and index.ntotal:
        report.add("index_wrong_kind", [kind], f"index file(s) are {kind}, not the requested {requested}")
    ids = ann.ids_of(index)
    uniq, counts = np.unique(ids, return_counts=True)
    report.add("index_duplicates", uniq[counts > 1].tolist(), "ids appear more than once in the index file")
    in_file, stored = set(uniq.tolist()), set(vector_ids)
    report.add(  # while a build runs, its newest save may hold vectors committed after our snapshot began
        "index_orphans",
        sorted(in_file - stored),
        "index entries have no stored vector (no metadata)",
        error=not running,
    )
    behind = sorted(stored - in_file)
    note = "a build is running" if running else "an interrupted build; the next build or a repair adds them"
    report.add("index_behind", behind, f"stored vectors are not in the index file yet ({note})", error=not running)
    if kind != "ivfpq":  # product-quantized codes are approximate by design: only their ids are checked
        report.add("index_vector_differs", _differing(store, index, stored), "index vectors differ from stored ones")
    marked = set(store.check_ids("state_embedded"))
    report.add(
        "state_behind_index",
        sorted(marked & in_file),
        "photos are in the index file but still marked 'embedded' (killed during a save)",
        error=not running,
    )


def _differing(store: Store, index, stored: set[int]) -> list[int]:
    """Ids whose vector in the index is not their stored one, as the index's kind keeps it (float16 kinds within
    their rounding; see ann.differs)."""
    differ: list[int] = []
    for ids, have in ann.iter_vectors(index):
        keep = [i for i, pid in enumerate(ids.tolist()) if pid in stored]
        if not keep:
            continue
        want = store.vectors([int(ids[i]) for i in keep])
        differ += [int(ids[keep[r]]) for r in np.flatnonzero(ann.differs(index, have[keep], want))]
    return sorted(set(differ))


def _check_files(store: Store, report: _Draft, running: bool) -> None:
    report.add(
        "temp_files",
        [str(p.relative_to(store.home)) for p in layout.temp_files(store.home)],
        "temp files (a running build writes them; a killed one leaves them)",
        error=not running,
    )
    missing, changed, source_missing, source_changed, known = [], [], [], [], set()
    for pid, path, sha in store.stored_files():
        full = layout.local_file(store.home, path)
        download = layout.is_download(path)
        known.add(full.resolve())
        digest = _sha256(full)
        if digest is None:
            (missing if download else source_missing).append(pid)
        elif digest != sha:
            (changed if download else source_changed).append(pid)
    report.checked["files"] = len(known)
    report.add("file_missing", missing, "downloaded photos are missing (their vectors still work)", error=False)
    report.add("file_changed", changed, "downloaded photos differ from the bytes that were embedded")
    report.add("source_missing", source_missing, "local photos are gone (their vectors still work)", error=False)
    report.add("source_changed", source_changed, "local photos changed since they were embedded", error=False)
    failed = {layout.file_stem(s) for s in store.failed_source_ids()}
    report.add(  # a failed photo's download is kept for a retry; others are a killed build's last downloads
        "file_without_photo",
        sorted(
            str(p.relative_to(store.home))
            for p in layout.photo_files(store.home)
            if p.resolve() not in known and p.stem not in failed
        ),
        "downloads not recorded yet (the next build uses them instead of downloading again)",
        error=False,
    )


def repair(store: Store, report: Report) -> list[str]:
    """Fix what `report` found, from stored vectors and files only. Call with the build lock held."""
    kinds = {f.kind: f for f in report.findings}
    done = []
    if "temp_files" in kinds:
        done.append(f"removed {len(store.remove_stale_temp_files())} temp files")
    if "vector_file_tail" in kinds:  # under SQLite's write lock: no append is half done
        store.truncate_vectors()
        done.append("cut the uncommitted tail of the vector file")
    unusable = ("vector_without_photo", "vector_bad_size", "vector_not_unit", "vector_missing")
    drop = [i for kind in unusable if kind in kinds for i in kinds[kind].ids]
    forget = kinds["file_changed"].ids if "file_changed" in kinds else []
    n = store.repair_rows(drop_vectors=drop, drop_orphan_collections="collection_without_photo" in kinds, forget=forget)
    for kind in unusable:
        if kind in kinds:
            done.append(f"dropped {len(kinds[kind].ids)} unusable vectors ({kind}); the next build re-embeds")
    if "collection_without_photo" in kinds:
        done.append("dropped collection rows without photos")
    if forget:
        done.append(f"removed {len(forget)} changed downloads")
    if n:
        done.append(f"corrected the state of {n} photos")
    if store.stamp is not None:  # the Store's own rebuild: the requested kind (and its policy) is kept
        store.rebuild_index()
        n, kind = int(store.index.ntotal), ann.kind_of(store.index)
        done.append(f"rebuilt {store.index_path.relative_to(store.home)} from {n} stored vectors ({kind})")
    return done


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()
