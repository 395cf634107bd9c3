"""Helpers for tests that run `imgidx` as a user does (a subprocess) and kill it: environment, a comparable
snapshot of a data home, and triggers that fire on what the build writes (database rows, files, index saves)."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import select
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CMD = [sys.executable, "-m", "imgidx"]
TIMESTAMPS = {"added_at", "updated_at"}
STATIC_ID = re.compile(r"/\d+/(\d+)_")


def imgidx_env(home: Path, fake=None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "IMGIDX_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "127.0.0.1,localhost"}
    env["IMGIDX_ALLOW_PRIVATE_HOSTS"] = "1"  # the fake Flickr's photo host is on loopback
    env.setdefault("IMGIDX_RUNTIME", "keras")  # no runtime measurement per test home (tests/test_onnx.py covers it)
    if fake is not None:
        env |= {
            "FLICKR_API_KEY": fake.api_key,
            "FLICKR_API_SECRET": fake.api_secret,
            "IMGIDX_FLICKR_REST_URL": fake.rest_url,
        }
    return env | extra


def run(args, env, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, **kw)


def start(args, env, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [*CMD, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def stored_vectors(home: Path, db: sqlite3.Connection, meta: dict) -> dict[int, bytes]:
    """photo id -> its row of the vector file as float32 bytes (float16 widens exactly: still bit for bit), read
    without the Store; comparable with the flat index's float32 rows."""
    slots = dict(db.execute("SELECT photo_id, slot FROM vectors").fetchall())
    if not slots:
        return {}
    dim = json.loads(meta["stamp"])["dim"]
    rows = np.fromfile(home / "vectors.bin", dtype=meta["vector_dtype"]).reshape(-1, dim)
    return {pid: rows[slot].astype(np.float32).tobytes() for pid, slot in slots.items()}


def snapshot(home: Path) -> dict:
    """Everything a build leaves that must match between a clean and a resumed build (timestamps aside)."""
    import faiss

    db = sqlite3.connect(f"file:{home / 'imgidx.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    photos = [
        {k: v for k, v in dict(r).items() if k not in TIMESTAMPS}
        for r in db.execute("SELECT * FROM photos ORDER BY id")
    ]
    collections = [tuple(r) for r in db.execute("SELECT name, photo_id, query, rank FROM collections ORDER BY 1, 2")]
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    vectors = stored_vectors(home, db, meta)
    if "int8_calibration" in meta:  # which photos calibrated must match; when, and how long it took, need not
        calibration = json.loads(meta["int8_calibration"])
        meta["int8_calibration"] = {k: v for k, v in calibration.items() if k not in ("when", "seconds")}
    db.close()
    index = faiss.read_index(str(home / "index" / "faiss.index"))
    ids = faiss.vector_to_array(index.id_map).tolist()
    flat = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal) if ids else np.empty((0, 0), np.float32)
    photos_dir = home / "photos"
    files = {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (photos_dir.rglob("*") if photos_dir.is_dir() else [])
        if p.is_file()
    }
    return {
        "photos": photos,
        "collections": collections,
        "meta": meta,
        "vectors": vectors,
        "index": {pid: row.tobytes() for pid, row in zip(ids, flat, strict=True)},
        "index_ids_unique": len(ids) == len(set(ids)),
        "files": files,
    }


def count(home: Path, sql: str) -> int:
    try:
        db = sqlite3.connect(f"file:{home / 'imgidx.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0  # not created yet, or the schema is being written


def file_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else 0


def static_ids(records) -> list[str]:
    return [m.group(1) for r in records if (m := STATIC_ID.match(r.path))]


def wait_for(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Poll until `condition` holds (True) or the process ends or time runs out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if condition():
            return True
        time.sleep(poll)
    return False


class Inotify:
    """Linux inotify through libc: fires as soon as a file is created in, or renamed into, a folder. Index saves
    last milliseconds, too short for polling; this lets a test SIGKILL a build in the middle of one."""

    IN_CREATE, IN_MOVED_TO = 0x100, 0x80

    def __init__(self, folder: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, str(folder).encode(), self.IN_CREATE | self.IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify unavailable")

    def wait(self, matches: Callable[[int, str], bool], timeout: float) -> bool:
        """Block until an event (mask, name) matches, or `timeout` seconds pass."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.fd], [], [], left)[0]:
                continue
            buf = os.read(self.fd, 65536)
            pos = 0
            while pos < len(buf):
                _wd, mask, _cookie, size = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16 : pos + 16 + size].rstrip(b"\0").decode()
                pos += 16 + size
                if matches(mask, name):
                    return True
        return False

    def close(self) -> None:
        os.close(self.fd)
