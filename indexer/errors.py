"""Domain errors. The CLI prints `error: <message>` and exits 1; no traceback reaches the user."""


class ImgidxError(Exception):
    """A whole-run failure the user can fix. The message says what happened and what to do next."""


class ConfigError(ImgidxError):
    """Missing or invalid configuration (API key, weights file, option values)."""


class StampMismatch(ImgidxError):
    """Vectors from two different model stamps would be mixed."""


class StoreError(ImgidxError):
    """The index or its metadata cannot be opened or written."""


class NoIndexError(StoreError):
    """There is no index in the data home yet (the face says how to build one)."""


class LockedError(ImgidxError):
    """Another build holds the data home."""


class ImageError(Exception):
    """One image cannot be used; `reason` is short and specific. Never stops a run."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
