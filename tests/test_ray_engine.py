"""engine="ray" on a real local Ray: `imgidx build --engine ray` from the fake Flickr, as a user runs it (a
subprocess), against a clean local build of the same photos. Only Flickr is fake; Ray, the model, the store are real.

What must hold (README "Ray engine"): the same index as the local engine (ids, metadata, collections, files, and
vectors bit for bit: same machine, runtime and batch size; Ray sets OMP_NUM_THREADS=1 in its workers, and the model
runtimes fix their own thread count, indexer/threads.py); a build whose driver is killed with SIGKILL resumes to
that same index; an embedder actor killed mid-build costs a retry, not the build. `make test-ray` runs these.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fake_flickr import FakeFlickr
from tests.subproc import count, file_count, run, snapshot, start, static_ids, wait_for
from tests.test_resume import assert_same_index, check_only_lag, env_for

N = 16  # with a placeholder, a photo the decoder refuses and two identical files: 14 vectors, 4 batches of 4
BUILD = ["build", "dog", "-n", N, "--weights", "random:0", "--batch-size", "4", "--workers", "4"]  # fc2
RAY = [*BUILD, "--engine", "ray"]
ACTOR = "ray::MapWorker(MapBatches(Embed))"  # how Ray names the embed actor's process


@dataclass
class World:
    fake: FakeFlickr
    root: Path
    clean: dict  # snapshot of an uninterrupted local build
    report: dict


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("ray.data", reason="Ray is an extra: pip install -e '.[dev,ray]' (make install)")
    root = tmp_path_factory.mktemp("ray")
    with FakeFlickr(seed=5, topics={"dog": 60}, hostile=False) as fake:
        ids = [p.id for p in fake.photos_for("dog", sort="relevance")[:N]]
        fake.delete(ids[3])  # placeholder: a failure with its reason
        fake.set_variant(ids[5], "truncated_jpeg")  # saved, then refused by the decoder
        fake.set_variant(ids[7], "exif_orientation_6")
        fake.set_variant(ids[9], "png_rgba")
        fake.set_variant(ids[11], "png_rgba")  # identical bytes: embedded once, vector reused
        clean = run([*BUILD, "--json"], env_for(root / "clean", fake, root))
        assert clean.returncode == 0, clean.stderr
        yield World(fake, root, snapshot(root / "clean"), json.loads(clean.stdout))


def session_pids(sid: int) -> dict[int, str]:
    """Processes of session `sid` (a build started in its own session, and the local Ray it started) -> cmdline."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return found


def end_session(sid: int, timeout: float = 30) -> None:
    """After a killed driver, Ray's agents outlive it for a while: end what this test started, and wait."""
    end = time.monotonic() + timeout
    while (left := session_pids(sid)) and time.monotonic() < end:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_build_equals_a_local_build_and_a_second_run_does_nothing(world, tmp_path):
    home = tmp_path / "home"
    env = env_for(home, world.fake, world.root)
    got = run([*RAY, "--json"], env, timeout=600)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    for key in ("requested", "downloaded", "skipped", "failures", "index"):
        assert report[key] == world.report[key], key  # failures: the same photos with the same reasons
    # identical bytes are embedded once when an earlier batch committed them: which batch a photo lands in
    # follows completion order (in a local build too), so only the sum is fixed
    assert report["embedded"] + report["reused"] == world.report["embedded"] + world.report["reused"]
    assert_same_index(snapshot(home), world.clean)  # vectors bit for bit, and the recorded runtime/weights
    ok = run(["verify", "--json"], env, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["problems"] == [], ok.stdout

    # photos the index already has never reach Ray: nothing downloaded or embedded again
    log_pos = len(world.fake.log.snapshot())
    again = run([*RAY, "--json"], env, timeout=600)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["embedded"] == 0 and second["downloaded"] == 0 and second["already_indexed"] == N - 2
    assert static_ids(world.fake.log.snapshot()[log_pos:]) == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_build_killed_with_sigkill_resumes_to_the_clean_index(world, tmp_path):
    home = tmp_path / "home"
    env = env_for(home, world.fake, world.root)
    proc = start(RAY, env, start_new_session=True)
    try:
        # at the first commit: the actor's batches may arrive together, so the next commits follow within ~0.1 s
        assert wait_for(proc, lambda: count(home, "SELECT COUNT(*) FROM vectors") >= 1, 300, 0.005), proc.communicate()
        proc.send_signal(signal.SIGKILL)  # the driver only, as the OOM killer or `kill -9 PID` would
        proc.communicate(timeout=60)
    finally:
        end_session(proc.pid)
    committed = count(home, "SELECT COUNT(*) FROM vectors")
    assert 1 <= committed < N - 2, committed  # killed mid-build, with committed work to keep
    print(f"driver killed with {committed} vectors committed")
    check_only_lag(home, env)
    on_disk = {p.stem for p in (home / "photos").rglob("*.*") if not p.name.startswith(".")}
    log_pos = len(world.fake.log.snapshot())
    resumed = run(BUILD, env)  # the local engine finishes what Ray started: one index, whichever engine
    assert resumed.returncode == 0, resumed.stderr
    assert not set(static_ids(world.fake.log.snapshot()[log_pos:])) & on_disk  # nothing downloaded twice
    assert_same_index(snapshot(home), world.clean)


@pytest.mark.ray
@pytest.mark.slow
def test_killing_the_embedder_actor_costs_a_retry_not_the_build(world, tmp_path):
    home = tmp_path / "home"
    env = env_for(home, world.fake, world.root)
    proc = start([*RAY, "--json"], env, start_new_session=True)

    def actors() -> list[int]:
        return [pid for pid, cmd in session_pids(proc.pid).items() if cmd.startswith(ACTOR)]

    try:
        # the photos are loaded and nothing is committed yet: the actor is loading the model or embedding (once
        # it has embedded, the rest streams back within a second; so it is killed before that)
        ready = wait_for(proc, lambda: actors() and file_count(home / "photos") >= N - 1, 300, 0.05)
        first = actors()
        assert ready and len(first) == 1, (ready, session_pids(proc.pid))
        os.kill(first[0], signal.SIGKILL)
        killed_at = count(home, "SELECT COUNT(*) FROM vectors")
        # Ray starts the actor again (a new process loads the model) and retries the batch it was given
        restarted = wait_for(proc, lambda: any(pid != first[0] for pid in actors()), 300, 0.1)
        out, err = proc.communicate(timeout=600)
    finally:
        end_session(proc.pid)
    assert killed_at == 0, "the actor had already returned vectors: kill it earlier, or the test proves nothing"
    assert restarted, "no new embed actor started after the kill"
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["embedded"] + report["reused"] == N - 2 and report["skipped"] == 2
    assert_same_index(snapshot(home), world.clean)


# Without Ray: one line that says how to install it (these run in `make test`: they need no Ray)
def test_without_ray_the_library_says_how_to_install_it(monkeypatch, tmp_path):
    import imgidx
    from imgidx.indexer.engines.ray_cluster import RayMissing

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    with pytest.raises(RayMissing, match=r"engine=\"ray\" needs Ray Data.*pip install 'imgidx\[ray\]'"):
        imgidx.open(tmp_path / "home").build(imgidx.sources.Folder(tmp_path), engine="ray")
    assert not (tmp_path / "home").exists()  # refused before anything was written


def test_without_ray_the_cli_says_how_to_install_it(monkeypatch):
    from imgidx.cli.app import app

    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(app, ["build", "dog", "--engine", "ray"])
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == "error: --engine ray needs Ray, which is not installed here: pip install 'imgidx[ray]'"
    )


def test_ray_address_needs_the_ray_engine(tmp_path):
    import imgidx
    from imgidx.indexer.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match='engine="ray"'):
        imgidx.open(tmp_path / "home").build(imgidx.sources.Folder(tmp_path), ray_address="auto")
    with pytest.raises(InvalidArgument, match="local|ray"):
        imgidx.open(tmp_path / "home").build(imgidx.sources.Folder(tmp_path), engine="spark")
