"""Special files given as a query photo (issue 13.2): /dev/zero, /dev/urandom, a FIFO and a directory are refused
at once with one line and exit 1, by `similar` and by `classify`; a regular file is read up to a cap only."""

from __future__ import annotations

import os
import time

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.errors import ConfigError
from imgidx.search.inputs import MAX_BYTES, read_file, read_photo

SPECIAL = {
    "/dev/zero": "a character device, not a regular file",
    "/dev/urandom": "a character device, not a regular file",
    "fifo": "a FIFO (named pipe), not a regular file",
    "dir": "a directory, not a regular file",
}


@pytest.fixture
def specials(tmp_path) -> dict[str, str]:
    os.mkfifo(tmp_path / "fifo")  # no writer: a plain open() would block forever
    (tmp_path / "dir").mkdir()
    return {name: name if name.startswith("/") else str(tmp_path / name) for name in SPECIAL}


@pytest.mark.parametrize("command", ["similar", "classify"])
@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_files_end_at_once_with_one_line(served_index, specials, command, name):
    path = specials[name]
    args = ["similar", path] if command == "similar" else ["classify", "shapes", path]
    start = time.monotonic()
    r = CliRunner().invoke(app, ["--home", str(served_index.home), *args])
    seconds = time.monotonic() - start
    assert r.exit_code == 1, r.stdout + r.stderr
    assert r.stderr == f"error: {path} cannot be used: {SPECIAL[name]}\n" and r.stdout == ""
    assert seconds < 2, seconds


def test_a_regular_file_is_read_up_to_the_cap_only(tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 1001)
    assert read_file(big, 1001) == b"\xff" * 1001
    with pytest.raises(ConfigError, match=r"big.jpg cannot be used: larger than 0 MiB"):
        read_file(big, 1000)


def test_the_query_file_cap_is_64_mib_as_security_md_states(tmp_path):
    """SECURITY.md: at most 64 MiB of a query file (sparse files: nothing is written to disk)."""
    at, over = tmp_path / "at.jpg", tmp_path / "over.jpg"
    with open(at, "wb") as f:
        f.truncate(64 * 2**20)
    with open(over, "wb") as f:
        f.truncate(64 * 2**20 + 1)
    assert len(read_file(at, MAX_BYTES)) == 64 * 2**20
    with pytest.raises(ConfigError, match=r"over.jpg cannot be used: larger than 64 MiB"):
        read_photo(over)
