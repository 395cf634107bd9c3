"""imgidx's own exceptions. Messages say what happened and what to do, in words of the library (never a CLI
flag or an HTTP status): the CLI prints `error: <message>` and exits 1, the HTTP service maps the class to a status."""


class ImgidxError(Exception):
    """A whole-run failure the user can fix. The message says what happened and what to do next."""


class ConfigError(ImgidxError):
    """Missing or invalid configuration (API key, weights file, option values)."""


class MissingCredentials(ConfigError):
    """The Flickr API key or secret is not set (the CLI adds how to index a folder instead)."""


class EmulatedPrecision(ConfigError):
    """The index's precision runs only emulated (very slowly) on this CPU, and it was not asked for explicitly."""


class StampMismatch(ImgidxError, ValueError):
    """Vectors from two different model stamps would be mixed (also: a classifier applied to other vectors)."""


class StoreError(ImgidxError):
    """The index or its metadata cannot be opened or written."""


class NoIndexError(StoreError):
    """There is no index in the data home yet (the face says how to build one)."""


class IndexUnavailable(StoreError):
    """The FAISS index file is missing or unreadable and too large to rebuild for one read (reindex rebuilds it)."""


class VectorsLost(StoreError):
    """The vector file is shorter than the catalogue says (cut by a crash or by hand): repairing the store forgets
    the lost vectors, and a later build embeds those photos again."""


class InvalidCollectionName(ConfigError):
    """A build's photos would go to a collection whose name is not allowed (indexer/names.py says what is).
    `nameable`: the source takes an explicit name for that collection instead (the query itself may stay)."""

    nameable = False


class LockedError(ImgidxError):
    """Another build holds the data home."""


class ImageError(Exception):
    """One image cannot be used; `reason` is short and specific. Never stops a run."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidArgument(ConfigError, ValueError):
    """An argument of a library call has a value it cannot take (a bad k, a bad classifier name, ...)."""


class NotFound(ImgidxError, LookupError):
    """A named thing is not in the index: a photo id, a collection, a classifier."""


class EmptyIndex(ConfigError):
    """The index exists but has no model stamp yet: nothing was embedded, so there is no model to query with."""


class ClassifierError(ImgidxError):
    """A saved classifier file cannot be loaded."""
