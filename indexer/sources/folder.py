"""A local folder of image files; first-level sub-folder names become collections (like flow_from_directory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .. import names
from ..errors import ConfigError
from ..records import Photo

NAME = "folder"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


class FolderSource:
    """Image files under `root` (read in place, never copied); files at the top level go to `as_name`, else to the
    folder's own name."""

    name = NAME

    def __init__(self, root: str | Path, *, as_name: str | None = None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"{root} is not a folder")
        self.collection = as_name or self.root.name

    def photos(self) -> Iterator[Photo]:
        found = False
        checked: set[str] = set()
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(self.root)
            collection = rel.parts[0] if len(rel.parts) > 1 else self.collection
            if collection not in checked:  # before any photo is stored: rename the folder, lose nothing
                if len(rel.parts) > 1:
                    where, todo = f"sub-folder {rel.parts[0]!r} of {self.root}", "rename the sub-folder"
                else:
                    where, todo = f"the files directly in {self.root}", "give their collection a name"
                checked.add(names.check(collection, where, todo=todo, nameable=len(rel.parts) == 1))
            yield Photo(
                source=NAME,
                source_id=rel.as_posix(),
                collection=collection,
                origin=str(self.root),
                path=str(path),
                title=path.stem,
            )
            found = True
        if not found:  # an empty folder is a mistake worth a message, not an empty index
            raise ConfigError(f"no image files ({' '.join(sorted(IMAGE_SUFFIXES))}) under {self.root}")
