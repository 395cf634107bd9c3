"""A photo file named on the command line -> model-ready pixels, or one clear error saying why not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from imgidx.indexer.errors import ConfigError, ImageError
from imgidx.indexer.images import prepare


def read_photo(photo: Path) -> npt.NDArray[np.uint8]:
    try:
        return prepare(Path(photo).read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read {photo}: {e.strerror or e}") from None
    except ImageError as e:
        raise ConfigError(f"{photo} cannot be used: {e.reason}") from None
