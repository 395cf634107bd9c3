"""Collection names: what a build accepts. A name becomes a folder of an imagefolder export, a CSV cell and a
label in a table, so it must be safe as all three: one line, no path separators, short.

Checked when a build lists its photos (before anything is stored), wherever the name comes from: a sub-folder, a
URL list's collection column, a Flickr query or an explicit name."""

from __future__ import annotations

import unicodedata

from .errors import InvalidCollectionName

MAX_BYTES = 100  # UTF-8 bytes: far below every file system's 255-byte name limit, with room for a suffix
RULE = (
    f"a collection name is 1 to {MAX_BYTES} bytes of UTF-8 text, with no control characters (newline, tab, ...), "
    "no '/' or '\\', no '..', no leading '.' and no spaces at either end"
)


def problem(name: str) -> str:
    """Why `name` cannot name a collection ("" when it can)."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        return f"it is {size} bytes long"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        return f"it contains the control character {bad!r}"
    for text in ("/", "\\", ".."):
        if text in name:
            return f"it contains {text!r}"
    if name.startswith("."):
        return "it starts with '.'"
    if name != name.strip():
        return "it starts or ends with a space"
    return ""


def check(name: str, where: str, *, todo: str = "", nameable: bool = False) -> str:
    """`name`, or InvalidCollectionName saying where it came from, what is wrong, what is allowed and (`todo`) what
    to do. nameable: the source takes an explicit name for this collection (a query's or a folder's top files)."""
    why = problem(name)
    if why:
        todo = f"; {todo}" if todo else ""
        error = InvalidCollectionName(f"{where}: the collection name {_show(name)} cannot be used: {why}; {RULE}{todo}")
        error.nameable = nameable
        raise error
    return name


def _show(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "...'"
