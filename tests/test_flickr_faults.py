"""Flickr API faults through the real flickrapi client and the fake: retries with exponential backoff and jitter
that honour Retry-After, invalid keys stop at once, a call budget the run stays under, garbage is a retry and
then a clear failure, repeats and drift never duplicate, and the API secret appears nowhere."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.errors import ConfigError, ImgidxError
from imgidx.indexer.sources.flickr import FlickrClient, FlickrQuery
from imgidx.indexer.sources.flickr_api import CallBudget
from tests.fake_flickr import FakeFlickr, ManualClock
from tests.subproc import imgidx_env, run

RETRIED = ["stat:105", "stat:10", "stat:0", "stat:201", "http:429", "http:500", "http:502", "http:503", "http:504"]
GARBAGE = ["truncated_json", "html_200", "short_body", "close", "delay:2"]


def source(fake, slept, **kw) -> FlickrClient:
    kw.setdefault("backoff", 1.0)
    return FlickrClient(fake.api_key, fake.api_secret, fake.rest_url, sleep=slept.append, timeout=1.0, **kw)


@pytest.mark.parametrize("fault", RETRIED + GARBAGE)
def test_transient_api_faults_are_retried_with_growing_jittered_backoff(fresh_fake_flickr, fault):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", [fault] * 3)
    slept: list[float] = []
    photos = list(source(fake, slept).search(FlickrQuery("cat", count=5)))
    assert len(photos) == 5 and len(slept) == 3
    for attempt, delay in enumerate(slept):  # backoff * 2**attempt, times a jitter factor in [0.5, 1.5)
        assert 0.5 * 2**attempt <= delay < 1.5 * 2**attempt, slept


def test_retry_after_from_flickr_is_honoured(fresh_fake_flickr):
    """flickrapi drops the headers of non-200 replies; our own session hook keeps Retry-After."""
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", ["http:429:retry_after=7", "http:503:retry_after=2"])
    slept: list[float] = []
    assert len(list(source(fake, slept).search(FlickrQuery("cat", count=3)))) == 3
    assert slept == [7, 2]


def test_invalid_key_stops_at_once(fresh_fake_flickr):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", ["stat:100"])
    slept: list[float] = []
    src = source(fake, slept)
    with pytest.raises(ConfigError, match="rejected the API key") as e:
        list(src.search(FlickrQuery("cat", count=3)))
    assert src.calls == 1 and slept == [] and "\n" not in str(e.value)


@pytest.mark.parametrize(("fault", "message"), [("http:403", "HTTP 403"), ("stat:20", "Flickr refused")])
def test_final_errors_stop_without_retrying(fresh_fake_flickr, fault, message):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", [fault])
    slept: list[float] = []
    with pytest.raises(ImgidxError, match=message):
        list(source(fake, slept).search(FlickrQuery("cat", count=3)))
    assert slept == []


def test_persistent_garbage_is_a_clear_failure(fresh_fake_flickr):
    fake = fresh_fake_flickr
    fake.inject("flickr.photos.search", ["html_200", "truncated_json", "html_200"])
    with pytest.raises(ImgidxError, match=r"kept failing after 3 tries \(garbled reply") as e:
        list(source(fake, [], retries=2).search(FlickrQuery("cat", count=3)))
    assert fake.api_secret not in str(e.value)


def test_the_call_budget_waits_instead_of_hitting_the_rate_limit():
    clock = ManualClock()
    waits: list[float] = []
    budget = CallBudget(3, 3600, clock=clock, sleep=clock.advance, on_wait=waits.append)
    with FakeFlickr(seed=0, topics={"cat": 3000}, hostile=False, rate_limit=3, clock=clock) as fake:
        src = FlickrClient(fake.api_key, fake.api_secret, fake.rest_url, budget=budget, sleep=lambda s: None)
        photos = list(src.search(FlickrQuery("cat", count=2500)))  # 5 pages: 3 now, 2 an hour later
        statuses = [r.status for r in fake.requests("flickr.photos.search")]
    assert len({p.source_id for p in photos}) == 2500 and statuses == [200] * 5
    assert waits == [3600] and budget.waited == 3600


def test_budget_counts_a_sliding_window():
    clock = ManualClock()
    budget = CallBudget(2, 10, clock=clock, sleep=clock.advance)
    for t in (0, 4, 11, 13, 14):  # 13 waits for 4 to leave the window (until 14), then 14 waits for 11 (until 21)
        clock.advance(max(0, t - clock()))
        budget.acquire()
    assert clock() == 21 and budget.waited == 8


@pytest.mark.parametrize(("past_cap", "drift"), [("repeat", 0), ("empty", 0), ("repeat", 50)])
def test_repeated_or_drifting_pages_never_yield_duplicates(past_cap, drift):
    with FakeFlickr(seed=2, topics={"cat": 1800}, hostile=False, page_cap=1000, past_cap=past_cap, drift=drift) as f:
        photos = list(source(f, []).search(FlickrQuery("cat", count=1800)))
    ids = [p.source_id for p in photos]
    assert len(ids) == len(set(ids)) and 900 <= len(ids) <= 1100


@pytest.mark.slow
def test_the_cli_says_when_it_waits_for_the_budget(fresh_fake_flickr, monkeypatch):
    fake = fresh_fake_flickr
    monkeypatch.setenv("FLICKR_API_KEY", fake.api_key)
    monkeypatch.setenv("FLICKR_API_SECRET", fake.api_secret)
    monkeypatch.setenv("IMGIDX_FLICKR_REST_URL", fake.rest_url)
    monkeypatch.setenv("IMGIDX_FLICKR_BUDGET_WINDOW", "1")
    args = ["build", "cat", "dog", "lion", "--count", "1", "--calls-per-hour", "2"]
    r = CliRunner().invoke(app, [*args, "--weights", "random:0", "--layer", "block5_pool", "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "flickr: call budget of 2 per 1 s reached; waiting" in r.stderr
    assert {rec.status for rec in fake.requests("flickr.photos.search")} == {200}


@pytest.mark.slow
def test_the_api_secret_never_appears_in_output_logs_or_files(fresh_fake_flickr, tmp_path):
    fake = fresh_fake_flickr
    env = imgidx_env(tmp_path / "home", fake, IMGIDX_BACKOFF="0.01", IMGIDX_RETRIES="4")
    model = ["--weights", "random:0", "--layer", "block5_pool"]
    fake.inject("flickr.photos.search", ["stat:105", "http:429:retry_after=0", "truncated_json", "html_200"])
    outputs = [run(["--verbose", "build", "dog", "-n", "3", *model], env)]
    fake.inject("flickr.photos.search", ["http:502"] * 5)
    outputs.append(run(["--verbose", "build", "cat", "-n", "3", *model], env))
    outputs.append(run(["build", "cat", "-n", "3", *model], {**env, "FLICKR_API_KEY": "f" * 32}))
    outputs += [run(["info", "--failures", "--json"], env), run(["verify", "--json"], env)]
    assert [o.returncode for o in outputs] == [0, 1, 1, 0, 0], [o.stderr[-300:] for o in outputs]
    assert "kept failing after 5 tries (HTTP 502)" in outputs[1].stderr
    text = "".join(o.stdout + o.stderr for o in outputs)
    assert "retrying" in text and fake.api_secret not in text
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert fake.api_secret.encode() not in path.read_bytes(), path
    info = json.loads(outputs[3].stdout)
    assert info["photos"] + info["failures"] == 3
