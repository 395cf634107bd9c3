"""Settings: the only module that reads os.environ. Precedence: CLI option > environment > default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

FLICKR_REST_URL = "https://api.flickr.com/services/rest/"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"


@dataclass(frozen=True)
class Settings:
    home: Path = Path("data")
    weights: str = "imagenet"
    flickr_rest_url: str = FLICKR_REST_URL
    flickr_key: str | None = None
    flickr_secret: str | None = field(default=None, repr=False)  # never printed
    token: str | None = field(default=None, repr=False)  # `imgidx serve` access token; never printed
    keras_home: Path = Path("~/.keras").expanduser()
    weights_url: str = WEIGHTS_URL  # where `imagenet` weights are downloaded from when online
    cache_dir: Path = Path("~/.cache/imgidx").expanduser()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            home=Path(env.get("IMGIDX_HOME") or "data"),
            weights=env.get("IMGIDX_WEIGHTS") or "imagenet",
            flickr_rest_url=env.get("IMGIDX_FLICKR_REST_URL") or FLICKR_REST_URL,
            flickr_key=env.get("FLICKR_API_KEY") or None,
            flickr_secret=env.get("FLICKR_API_SECRET") or None,
            token=env.get("IMGIDX_TOKEN") or None,
            keras_home=Path(env.get("KERAS_HOME") or "~/.keras").expanduser(),
            weights_url=env.get("IMGIDX_WEIGHTS_URL") or WEIGHTS_URL,
            cache_dir=Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "imgidx",
        )

    def with_options(self, **options: object) -> Settings:
        """Apply CLI options that were given (None means "not given")."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})
