"""One data home, several processes: a second build (or a repair) is refused with a clear message while a build
runs, and `similar`, `info` and `verify` read a consistent index in the meantime."""

from __future__ import annotations

import json
import os
import re

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.compose import build_running
from tests.subproc import count, imgidx_env, run, start, wait_for

pytestmark = pytest.mark.slow
BUILD = ["build", "dog", "-n", 24, "--weights", "random:0", "--layer", "block5_pool", "--batch-size", "4"]
runner = CliRunner()


@pytest.fixture
def running_build(fresh_fake_flickr, tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = imgidx_env(home, fresh_fake_flickr, IMGIDX_SAVE_EVERY="0")
    monkeypatch.setenv("IMGIDX_HOME", str(home))
    proc = start(BUILD, env)
    try:
        assert wait_for(proc, lambda: build_running(home), 120), proc.communicate()[1]
        yield proc, home, env
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.long  # a build of its own running beside: make test-long (CI runs it)
def test_a_second_build_and_a_repair_are_refused_while_one_runs(running_build):
    proc, home, env = running_build
    second = run(BUILD, env)
    assert second.returncode == 1 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert re.match(
        rf"error: another imgidx build \(pid {proc.pid}\) is writing to {re.escape(str(home))}", second.stderr
    )
    assert wait_for(proc, lambda: count(home, "SELECT COUNT(*) FROM vectors") > 0, 240)
    repair = runner.invoke(app, ["verify", "--repair"])
    assert repair.exit_code == 1 and "another imgidx build" in repair.stderr
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert run(BUILD, env).returncode == 0  # once it is done, the next build gets the lock


@pytest.mark.long  # reads beside a build of its own: make test-long (CI runs it)
def test_similar_info_and_verify_read_a_consistent_index_during_a_build(running_build):
    proc, home, env = running_build
    sizes, reads = [], 0
    while proc.poll() is None:
        info = runner.invoke(app, ["info", "--json"])
        if info.exit_code != 0:  # only before the first commit: no index yet
            assert "no index" in info.stderr and not sizes, info.stderr
            continue
        d = json.loads(info.stdout)
        assert d["photos"] == d["index"]["size"] == sum(d["collections"].values()), d  # one snapshot
        if d["photos"] == 0:
            continue
        sizes.append(d["photos"])
        first = count(home, "SELECT MIN(photo_id) FROM vectors")
        hits = json.loads(runner.invoke(app, ["similar", "--id", first, "-k", 100, "--json"]).stdout)["hits"]
        ids = [h["id"] for h in hits]
        assert ids[0] == first and len(ids) == len(set(ids)) >= min(d["photos"], 100)
        assert all(h["source_id"] and h["collections"] == ["dog"] for h in hits)
        check = runner.invoke(app, ["verify", "--json"])
        assert check.exit_code == 0, check.stdout  # lag behind a running build is a warning, not damage
        reads += 1
    assert proc.returncode == 0
    assert reads >= 3 and sizes == sorted(sizes), sizes  # saw the index grow, never shrink
    assert os.path.exists(home / "index" / "faiss.index")
