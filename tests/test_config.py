"""Settings: timeouts, retries, byte cap and call budget come from the environment or options, checked once."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imgidx.cli.app import app
from imgidx.indexer.config import Settings
from imgidx.indexer.errors import ConfigError


def test_defaults_and_environment():
    assert Settings.from_env({}).download_deadline == 60 and Settings.from_env({}).flickr_calls_per_hour == 3600
    s = Settings.from_env({"IMGIDX_READ_TIMEOUT": "0.5", "IMGIDX_RETRIES": "0", "IMGIDX_FLICKR_CALLS_PER_HOUR": "10"})
    assert (s.read_timeout, s.retries, s.flickr_calls_per_hour) == (0.5, 0, 10)
    assert s.with_options(download_deadline=5, flickr_calls_per_hour=None).download_deadline == 5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMGIDX_READ_TIMEOUT": "soon"}, "IMGIDX_READ_TIMEOUT must be a number; received 'soon'"),
        ({"IMGIDX_RETRIES": "2.5"}, "IMGIDX_RETRIES must be a whole number"),
        ({"IMGIDX_DOWNLOAD_DEADLINE": "0"}, "download_deadline must be > 0; received 0.0"),
        ({"IMGIDX_RETRIES": "-1"}, "retries must be >= 0; received -1"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_the_cli_reports_a_bad_setting_in_one_line(monkeypatch):
    monkeypatch.setenv("IMGIDX_MAX_BYTES", "lots")
    r = CliRunner().invoke(app, ["info"])
    assert r.exit_code == 1 and r.stderr.strip() == "error: IMGIDX_MAX_BYTES must be a whole number; received 'lots'"
    monkeypatch.delenv("IMGIDX_MAX_BYTES")
    r = CliRunner().invoke(app, ["build", "--from-dir", ".", "--timeout", "-1", "--weights", "random:0"])
    assert r.exit_code == 1 and "download_deadline must be > 0" in r.stderr
