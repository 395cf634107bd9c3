"""The operations of an index, each written once, in a module by job. `imgidx.Index` is their face for Python and
the CLI (it checks the arguments users pass, opens the store, calls one operation); the HTTP service's store
thread calls them on the store it keeps open. No model here: a caller that embeds photos passes `embed`
(`Index` builds its model on first need; the service keeps its own behind the micro-batcher).

    build.py        build: a source's photos into the index (the one operation that opens its own Store)
    queries.py      similar / nearest / describe, stored and caller's vectors, a photo, the collections
    clean.py        clean (evidence, judged with the reviews, stored flags), what to review next
    review.py       a person's decisions on flags
    audit.py        the label-noise check across collections
    classify.py     train, and a saved classifier's predictions (photos, ids, a collection)
    dataset.py      duplicates (+ their reversible flags) and export
    maintenance.py  info, verify, repair, reindex

Each module's main operation has the module's name (`ops.clean` is the function; its module, imgidx.ops.clean).
`check_*`: the argument checks the faces share (`Index` calls them before or beside the operation).
"""

from .audit import audit
from .build import Source, build
from .classify import classify, classify_stored, predict, train
from .clean import (
    CleanEvidence,
    apply_clean,
    clean,
    clean_evidence,
    clean_report,
    judged_report,
    review_next,
    review_queue,
    undo_clean,
)
from .dataset import duplicates, export_collections, flag_duplicates, undo_duplicates
from .maintenance import check_kind, info, reindex, repair, verify
from .queries import (
    PhotoInput,
    check_photo_id,
    collections,
    describe,
    labelled_ids,
    nearest,
    photo_file,
    photo_info,
    query_vector,
    similar,
    stored_vectors,
)
from .review import review, review_photos, reviews, undo_review, undo_reviews

__all__ = [
    "CleanEvidence",
    "PhotoInput",
    "Source",
    "apply_clean",
    "audit",
    "build",
    "check_kind",
    "check_photo_id",
    "classify",
    "classify_stored",
    "clean",
    "clean_evidence",
    "clean_report",
    "collections",
    "describe",
    "duplicates",
    "export_collections",
    "flag_duplicates",
    "info",
    "judged_report",
    "labelled_ids",
    "nearest",
    "photo_file",
    "photo_info",
    "predict",
    "query_vector",
    "reindex",
    "repair",
    "review",
    "review_next",
    "review_photos",
    "review_queue",
    "reviews",
    "similar",
    "stored_vectors",
    "train",
    "undo_clean",
    "undo_duplicates",
    "undo_review",
    "undo_reviews",
    "verify",
]
