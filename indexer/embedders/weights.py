"""Which weights to use, where they live, and their fingerprint. No Keras import here (only a download imports it).

`imagenet` follows Keras' own cache (`$KERAS_HOME/models/`, default `~/.keras/models/`) and downloads when
online; `random[:SEED]` is an explicit, deterministic random init (tests and benchmarks only); anything else is
a path to a weights file. A file that lacks the layers a requested layer needs is an error, never a silent
random init.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from types import ModuleType

from .. import atomic
from ..errors import ConfigError
from ..records import WeightsSpec
from . import vgg16

# A model module (vgg16.py) says which layers need which file, the official file names and md5s, and its URL.


def check_layer(layer: str, model: ModuleType = vgg16) -> str:
    if layer not in model.LAYERS:
        raise ConfigError(f"unknown layer {layer!r}; choose one of: {', '.join(model.LAYERS)}")
    return layer


def resolve(
    weights: str,
    layer: str,
    keras_home: Path,
    weights_url: str,
    cache_dir: Path | None = None,
    *,
    model: ModuleType = vgg16,
) -> WeightsSpec:
    """Turn weights imagenet|random[:SEED]|PATH into a usable spec, downloading imagenet weights if needed (from
    weights_url; "": the model's own URL)."""
    check_layer(layer, model)
    weights_url = weights_url or model.WEIGHTS_URL
    if weights == "random" or weights.startswith("random:"):
        seed_text = weights.partition(":")[2] or "0"
        if not seed_text.isdigit():
            raise ConfigError(f"random weights take an integer seed, e.g. random:0; received {weights!r}")
        return WeightsSpec("random", seed=int(seed_text), fingerprint=f"random:{int(seed_text)}")
    if weights == "imagenet":
        path = _imagenet_file(layer, keras_home, weights_url, model)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"weights file {path} does not exist; give weights imagenet, random[:SEED] or a file's path"
            )
    has_top = file_has_top(path, model)
    if layer in model.NEEDS_TOP and not has_top:
        raise ConfigError(
            f"weights file {path} has no fc1/fc2 layers (a convolutional-only 'notop' file); "
            "use layer block5_pool with it, or a full VGG16 weights file for fc2"
        )
    sha = file_sha256(path, cache_dir / "weights-sha256.json" if cache_dir else None)
    return WeightsSpec("file", path=path, has_top=has_top, fingerprint=f"sha256:{sha}")


def _imagenet_file(layer: str, keras_home: Path, weights_url: str, model: ModuleType) -> Path:
    models = keras_home / "models"
    candidates = model.imagenet_files(layer)
    for name in candidates:
        if (models / name).is_file():
            return models / name
    name = candidates[0]
    try:
        return _download(name, models, weights_url, model)
    except Exception as e:  # noqa: BLE001 - any download failure means the same thing to the user
        raise ConfigError(
            f"ImageNet weights {name} are not in {models} and could not be downloaded ({_first_line(e)}). "
            f"Download {weights_url}{name} on a machine with internet and copy it to {models / name}, "
            "or give that file's path as the weights"
        ) from None


def _download(name: str, models: Path, weights_url: str, model: ModuleType) -> Path:
    """Download an official file to a temp name, check it against Keras' published md5, then rename it into
    place: a file under an official name in the cache is trusted, so a wrong or partial one must never land there.
    A mirror (IMGIDX_WEIGHTS_URL) is checked like Keras' own URL: it must serve the same bytes."""
    from .keras_env import import_keras  # only here: resolving a cached file must not import TensorFlow

    keras = import_keras()
    url = weights_url.rstrip("/") + "/" + name
    md5 = model.OFFICIAL_MD5[name]
    with atomic.replacing(models / name) as tmp:  # creates models/ (without it Keras falls back to /tmp/.keras)
        with contextlib.redirect_stdout(sys.stderr):  # Keras' progress bar must not pollute --json output
            try:
                got = keras.utils.get_file(
                    tmp.name, url, cache_subdir=models.name, cache_dir=str(models.parent), file_hash=md5
                )
            except ValueError:  # Keras: the hash does not match (it leaves the file; replacing removes it)
                raise OSError(f"the file at {url} is not Keras' published {name} (its md5 is not {md5})") from None
        if Path(got).resolve() != tmp.resolve():
            raise OSError(f"Keras saved the file to {got} instead")
    return models / name


def file_has_top(path: Path, model: ModuleType = vgg16) -> bool:
    """True when the file holds the fully connected layers (legacy Keras 2 .h5 or Keras 3 .weights.h5)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:  # legacy format: layer names recorded as an attribute
                names = {n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]}
                return names >= model.TOP_LAYERS
            if "layers" in f:  # Keras 3 format: groups named after the layer classes
                return sum(1 for k in f["layers"] if k.startswith("dense")) >= 2
    except OSError as e:
        raise ConfigError(f"weights file {path} is not a readable HDF5 weights file ({_first_line(e)})") from None
    raise ConfigError(f"weights file {path} is not a Keras weights file (no layer_names attribute, no layers group)")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path, cache_file: Path | None = None) -> str:
    """sha256 of the file, cached by (path, size, mtime) in memory and in `cache_file` (hashing 528 MB takes ~1 s)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    disk: dict[str, str] = {}
    if cache_file is not None:
        with contextlib.suppress(OSError, ValueError):
            disk = json.loads(cache_file.read_text())
    skey = "|".join(map(str, key))
    if skey not in disk:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        disk[skey] = h.hexdigest()
        if cache_file is not None:
            with contextlib.suppress(OSError):  # the cache is an optimisation only
                atomic.write_text(cache_file, json.dumps(disk))
    _SHA_CACHE[key] = disk[skey]
    return disk[skey]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__  # whole: a cut reason ("… Name or )") helps nobody
