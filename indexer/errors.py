"""Domain errors. The CLI prints `error: <message>` and exits 1; no traceback reaches the user."""


class ImgidxError(Exception):
    """A whole-run failure the user can fix. The message says what happened and what to do next."""


class ConfigError(ImgidxError):
    """Missing or invalid configuration (API key, weights file, option values)."""


class EmulatedPrecision(ConfigError):
    """The index's precision runs only emulated (very slowly) on this CPU, and it was not asked for explicitly."""


class StampMismatch(ImgidxError):
    """Vectors from two different model stamps would be mixed."""


class StoreError(ImgidxError):
    """The index or its metadata cannot be opened or written."""


class LockedError(ImgidxError):
    """Another build holds the data home."""


class ImageError(Exception):
    """One image cannot be used; `reason` is short and specific. Never stops a run."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
