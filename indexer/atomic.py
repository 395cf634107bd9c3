"""The one atomic write: a reader (or a crash) sees the old file or the new one, never half of one.

Write to a temp file in the same folder (so the rename never crosses a file system), fsync it, os.replace it over
the target, then fsync the folder so the rename itself survives a power cut. Temp names are
`.<name>.<pid>.<thread>.tmp`: hidden, and recognised by `is_temp` (verify and the stale-temp cleanup use it).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_TEMP = re.compile(r"^\..+?\.(\d+)(?:\.\d+)?\.tmp$")


def temp_path(target: Path) -> Path:
    """Where a write of `target` goes before the rename (unique per process and thread)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def is_temp(path: Path) -> bool:
    return _TEMP.match(path.name) is not None


def temp_owner(path: Path) -> int | None:
    """The pid that wrote a temp file (None for other names)."""
    m = _TEMP.match(path.name)
    return int(m.group(1)) if m else None


def owner_alive(path: Path) -> bool:
    """True when the process that wrote temp file `path` still runs (then it may still be writing it)."""
    pid = temp_owner(path)
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def replacing(target: Path, *, sync_file: bool = True, sync_dir: bool = True) -> Iterator[Path]:
    """Yield a temp path to write in full; on a clean exit it is fsynced and renamed over `target`.

    For writers that want a path (faiss.write_index); any exception removes the temp file and propagates.
    sync_file=False: the temp file holds no new data (a hard link to a durable file). sync_dir=False: the caller
    fsyncs the folder itself, once for many renames (fsync_dir), before it relies on them."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        if sync_file:
            fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)


def link_new(source: str | Path, target: str | Path) -> bool:
    """Hard-link `source` at `target`, a name that does not exist yet: atomic by itself (the name appears with the
    whole file or not at all), so no temp file and no rename. False, with nothing changed, when the name exists,
    its folder is missing, or the file system refuses the link (then the caller writes aside and renames).
    Like replacing(sync_file=False, sync_dir=False): the caller fsyncs the folder before relying on the link."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


def write_with(target: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Atomically write `target` through `write(binary_file)`."""
    with replacing(target) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return Path(target)


def write_bytes(target: Path, data: bytes) -> Path:
    return write_with(target, lambda f: f.write(data))


def write_text(target: Path, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def fsync_file(path: str | Path) -> None:
    """Make a file's bytes durable (for a writer that learns only after writing whether the bytes are new, such
    as export's copy when a hard link is refused)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
