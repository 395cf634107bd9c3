"""Settings: the only module that reads os.environ. Precedence: CLI option > environment > default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError
from .retry import RETRIES

FLICKR_REST_URL = "https://api.flickr.com/services/rest/"
# Numeric knobs: (environment variable, Settings field, type). Timeouts are small in tests, generous here.
NUMERIC_ENV = (
    ("IMGIDX_CONNECT_TIMEOUT", "connect_timeout", float),
    ("IMGIDX_READ_TIMEOUT", "read_timeout", float),
    ("IMGIDX_DOWNLOAD_DEADLINE", "download_deadline", float),
    ("IMGIDX_RETRIES", "retries", int),
    ("IMGIDX_BACKOFF", "backoff", float),
    ("IMGIDX_MAX_BACKOFF", "max_backoff", float),
    ("IMGIDX_MAX_BYTES", "max_bytes", int),
    ("IMGIDX_FLICKR_TIMEOUT", "flickr_timeout", float),
    ("IMGIDX_FLICKR_CALLS_PER_HOUR", "flickr_calls_per_hour", int),
    ("IMGIDX_FLICKR_BUDGET_WINDOW", "flickr_budget_window", float),
    ("IMGIDX_SAVE_EVERY", "save_every", float),
)


@dataclass(frozen=True)
class Settings:
    home: Path = Path("data")
    weights: str = "imagenet"
    flickr_rest_url: str = FLICKR_REST_URL
    flickr_key: str | None = None
    flickr_secret: str | None = field(default=None, repr=False)  # never printed
    token: str | None = field(default=None, repr=False)  # `imgidx serve` access token; never printed
    keras_home: Path = Path("~/.keras").expanduser()
    weights_url: str = ""  # where `imagenet` weights are downloaded from when online ("": the model's own URL)
    cache_dir: Path = Path("~/.cache/imgidx").expanduser()
    # downloads (fetch.Fetcher) and API calls (sources.FlickrSource)
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # longest silence while reading a reply (a stalled body)
    download_deadline: float = 60.0  # longest one download may take in total (a slow drip)
    retries: int = RETRIES  # per download and per API call, with exponential backoff and jitter
    backoff: float = 1.0  # first backoff in seconds; doubles per retry; Retry-After wins when sent
    max_backoff: float = 60.0
    max_bytes: int = 20 * 1024 * 1024
    flickr_timeout: float = 30.0
    flickr_calls_per_hour: int = 3600  # Flickr's published limit per key
    flickr_budget_window: float = 3600.0  # the budget's window in seconds (tests shrink it)
    save_every: float = 60.0  # seconds between saves of the FAISS file during a build
    # photo downloads from private, loopback, link-local and multicast addresses (SSRF): off unless asked for,
    # e.g. for a photo host on the local network, or the tests' local fake Flickr
    allow_private_hosts: bool = False
    runtime: str = "auto"  # keras | onnx | auto (the faster here, measured once per machine: embedders/choice.py)
    # the CPU feature flags the precision rules read (None: /proc/cpuinfo's); IMGIDX_CPU_FLAGS, space- or
    # comma-separated, makes a machine decide as another CPU kind would (tests force each kind's path this way)
    cpu_flags: frozenset[str] | None = None
    # int8: reuse one quantized model across data homes through the user cache (IMGIDX_INT8_SHARED=1). Off by
    # default: each home calibrates once (a fixed cost), so a build's time does not depend on which other home
    # calibrated first (README "Precision by CPU kind": calibration)
    int8_shared: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        numbers = {name: _number(env, var, kind) for var, name, kind in NUMERIC_ENV if env.get(var)}
        return cls(
            home=Path(env.get("IMGIDX_HOME") or "data"),
            weights=env.get("IMGIDX_WEIGHTS") or "imagenet",
            flickr_rest_url=env.get("IMGIDX_FLICKR_REST_URL") or FLICKR_REST_URL,
            flickr_key=env.get("FLICKR_API_KEY") or None,
            flickr_secret=env.get("FLICKR_API_SECRET") or None,
            token=env.get("IMGIDX_TOKEN") or None,
            keras_home=Path(env.get("KERAS_HOME") or "~/.keras").expanduser(),
            weights_url=env.get("IMGIDX_WEIGHTS_URL") or "",
            cache_dir=Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "imgidx",
            allow_private_hosts=_flag(env, "IMGIDX_ALLOW_PRIVATE_HOSTS"),
            runtime=env.get("IMGIDX_RUNTIME") or "auto",
            cpu_flags=_flags_list(env.get("IMGIDX_CPU_FLAGS")),
            int8_shared=_flag(env, "IMGIDX_INT8_SHARED"),
            **numbers,
        )

    def with_options(self, **options: object) -> Settings:
        """Apply CLI options that were given (None means "not given")."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def __post_init__(self) -> None:
        for _var, name, _kind in NUMERIC_ENV:
            value, may_be_zero = getattr(self, name), name in ("retries", "backoff", "save_every")
            if value < 0 or (value == 0 and not may_be_zero):
                raise ConfigError(f"{name} must be {'>= 0' if may_be_zero else '> 0'}; received {value}")


def _number(env, var: str, kind: type) -> float | int:
    try:
        return kind(env[var])
    except ValueError:
        raise ConfigError(f"{var} must be a {'whole ' if kind is int else ''}number; received {env[var]!r}") from None


def _flag(env, var: str) -> bool:
    value = (env.get(var) or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{var} must be 1 or 0; received {env[var]!r}")


def _flags_list(value: str | None) -> frozenset[str] | None:
    return frozenset(value.replace(",", " ").split()) if value and value.strip() else None
