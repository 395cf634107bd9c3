"""A photo file named on the command line -> model-ready pixels, or one clear error saying why not.

Only regular files are read, and at most MAX_BYTES of them: /dev/zero, a FIFO or a directory is refused at once
instead of reading forever (or blocking on a FIFO that no one writes to)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import numpy.typing as npt

from imgidx.indexer.errors import ConfigError, ImageError
from imgidx.indexer.images import prepare

MAX_BYTES = 64 * 2**20  # far above any photo worth embedding; the decoder caps pixels and decoded bytes itself


def read_photo(photo: Path, *, max_bytes: int = MAX_BYTES) -> npt.NDArray[np.uint8]:
    try:
        data = read_file(Path(photo), max_bytes)
    except OSError as e:
        raise ConfigError(f"cannot read {photo}: {e.strerror or e}") from None
    try:
        return prepare(data)
    except ImageError as e:
        raise ConfigError(f"{photo} cannot be used: {e.reason}") from None


def read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; ConfigError for anything else."""
    # O_NONBLOCK: opening a FIFO without a writer must not wait; fstat then tells what was opened
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path} cannot be used: {_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise ConfigError(f"{path} cannot be used: {_too_big(info.st_size, max_bytes)}")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):  # at most one byte past the cap
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:  # the file grew after fstat
                raise ConfigError(f"{path} cannot be used: {_too_big(size, max_bytes)}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _too_big(size: int, limit: int) -> str:
    return f"larger than {limit / 2**20:.0f} MiB ({size / 2**20:.1f} MiB read); not a photo to query with"
