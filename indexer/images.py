"""Image bytes -> 224x224 RGB uint8 array (seed 003 §9.2: centre crop to a square, resize, no distortion).

Decoding is defensive: every failure becomes ImageError with a short, specific reason that the build records
and moves on from. JPEGs at least 4x larger than needed are decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(Pillow `draft`), several times faster, but never below twice the target size: Lanczos then still does the last
>= 2x reduction and its anti-aliasing. Drafting all the way down to the target aliased fine patterns (a scanned
print's halftone: embedding cosine 0.989 to the full decode); with the margin it stays >= 0.995 (README).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, ImageMode, ImageOps, UnidentifiedImageError

from .embedders.vgg16 import INPUT_SIZE
from .errors import ImageError

TARGET_SIZE = INPUT_SIZE  # the model's input side (embedders/vgg16.py)
MAX_PIXELS = 89_478_485  # Pillow's own bomb limit; we refuse instead of warning
# The same budget in bytes (89 Mpx of 8-bit RGB): a 16-bit or float image of fewer pixels can cost far more
MAX_DECODED_BYTES = 256 * 2**20
# Only these decoders ever run (the ones the error messages name; never EPS/Ghostscript, PDF, ...). MPO is a
# multi-picture JPEG (phone cameras): the JPEG decoder opens it.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
FORMATS_TEXT = "JPEG, PNG, GIF, BMP, TIFF or WebP"  # for messages
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_BYTE_ORDERS = {"I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}
MIN_SIDE = 32  # below this there is nothing for a 224-px CNN to see
DRAFT_MARGIN = 2  # JPEG draft decoding stops at DRAFT_MARGIN x the target size (see the module docstring)
_SRGB = ImageCms.createProfile("sRGB")


def prepare(data: bytes, size: int = TARGET_SIZE, *, max_pixels: int = MAX_PIXELS, draft: bool = True) -> npt.NDArray:
    """Decode, fix orientation and colours, centre-crop to a square, resize to `size`. Total: any bytes give a
    writable (size, size, 3) uint8 array or ImageError with a one-line reason, never another exception."""
    with total("cannot be decoded"):
        return pixels(decode(data, size if draft else None, max_pixels=max_pixels), size)


def pixels(img: Image.Image, size: int = TARGET_SIZE) -> npt.NDArray:
    """A decoded image of any Pillow mode -> writable (size, size, 3) uint8, or ImageError (total, like prepare)."""
    with total("cannot be converted"):
        img = to_rgb(img, keep_grey=True)  # grey stays one band until it is small: 1 byte a pixel, not 4
        # np.array, not asarray: a view of Pillow's buffer is read-only, and callers may scale in place
        return np.array(center_square(img, size).convert("RGB"), dtype=np.uint8)


def thumbnail(data: bytes, size: int) -> Image.Image:
    """An RGB picture whose longest side is `size` px (never enlarged), EXIF-rotated, colours and transparency as
    the index sees them (to_rgb). The same decoder, format list and bomb limits as prepare, and as total: ImageError
    with a one-line reason, never another exception (the web page's thumbnails and the contact sheets use it)."""
    with total("cannot be made into a thumbnail"):
        img = decode(data, size)
        img.thumbnail((size, size), Image.Resampling.LANCZOS)  # first: the conversions below run on the small copy
        return to_rgb(img)


@contextlib.contextmanager
def total(what: str) -> Iterator[None]:
    """Whatever Pillow or numpy raise on one image (a mode they cannot convert, a read-only buffer, a broken frame
    table, memory) becomes that image's ImageError: one odd photo is skipped, it never stops a build, a search or
    a request. Bugs stay visible in the reason: the exception's type and first words."""
    try:
        yield
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("too large to decode in the memory available") from None
    except Exception as e:  # noqa: BLE001 - the one place every decoding failure is turned into a reason
        raise ImageError(f"{what} ({type(e).__name__}: {_short(e)})") from None


def decode(
    data: bytes, draft_size: int | None, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_DECODED_BYTES
) -> Image.Image:
    if not data:
        raise ImageError("empty file (0 bytes)")
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        raise ImageError("not an image: the server sent an HTML/XML page")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"too many pixels ({w}x{h} = {w * h / 1e6:.0f} Mpx; limit {max_pixels / 1e6:.0f} Mpx): "
                    "decompression bomb refused"
                )
            per_pixel = pixel_bytes(img.mode)
            if w * h * per_pixel > max_bytes:
                raise ImageError(
                    f"too many bytes when decoded ({w}x{h} px x {per_pixel} bytes = {w * h * per_pixel / 2**20:.0f} "
                    f"MiB; limit {max_bytes / 2**20:.0f} MiB): decompression bomb refused"
                )
            if min(w, h) < MIN_SIDE:
                raise ImageError(f"image too small ({w}x{h} px; need at least {MIN_SIDE} px per side)")
            if draft_size and img.format == "JPEG" and min(w, h) >= 2 * DRAFT_MARGIN * draft_size:
                s, t = min(w, h), DRAFT_MARGIN * draft_size
                img.draft(img.mode, (math.ceil(w * t / s), math.ceil(h * t / s)))
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"too many pixels: decompression bomb refused ({_short(e)})") from None
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as e:
        raise ImageError(f"corrupt or truncated image ({_short(e)})") from None
    return img


def to_rgb(img: Image.Image, *, keep_grey: bool = False) -> Image.Image:
    """EXIF orientation, ICC profile to sRGB, any mode to RGB (transparency onto white); with keep_grey, plain
    grey ("L") is left as it is (resizing it and then copying it to three bands gives the same pixels)."""
    if img.mode in _HIGH_DEPTH:  # first: the 8-bit copy is the smaller one to rotate
        img = _high_depth_to_l(img)
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose an otherwise good photo
        ImageOps.exif_transpose(img, in_place=True)  # in place: no full-size copy when nothing turns
    if keep_grey and img.mode == "L":
        return img
    if img.mode == "La":  # premultiplied grey + alpha: Pillow converts it to nothing but through RGBa
        grey, alpha = img.split()
        img = Image.merge("RGBa", (grey, grey, grey, alpha))
    if img.mode == "P" and "transparency" in img.info or img.mode in ("PA", "LA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "RGBA", "CMYK"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unreadable profile: fall back to the plain conversion below
    return img.convert("RGB") if img.mode != "RGB" else img


def center_square(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + s, top + s))


def image_format(data: bytes) -> str:
    """File extension for already-decoded bytes, from their content (never from remote names)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            fmt = (Image.open(io.BytesIO(data), formats=FORMATS).format or "bin").lower()
    except Exception:  # noqa: BLE001 - a sniff: bombs, garbage, anything odd is "bin"; decode() says why
        return "bin"
    return {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)


def pixel_bytes(mode: str) -> int:
    """Bytes one decoded pixel takes: bands x bytes per sample ("RGB" 3, "I;16" 2, "F" 4, "RGBA" 4)."""
    try:
        m = ImageMode.getmode(mode)
        return len(m.bands) * np.dtype(m.typestr).itemsize
    except (KeyError, TypeError):
        return 4  # an exotic mode: count it as the widest common one


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit, a band of rows at a time in float32: the only full-size copy
    made is the 8-bit result (a whole-image float64 array cost 8 bytes a pixel, twice)."""
    if img.mode in _BYTE_ORDERS:  # Pillow computes nothing on these: the same samples as plain "I;16" first
        w, h = img.size
        samples = np.frombuffer(img.tobytes(), dtype=_BYTE_ORDERS[img.mode]).reshape(h, w)
        img = Image.frombuffer("I;16", (w, h), samples.astype("<u2").tobytes(), "raw", "I;16", 0, 1)
    lo, hi = (float(v) for v in img.getextrema())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if img.mode == "F":
        lo, hi = min(lo, 0.0), max(hi, 1.0)
    else:
        lo, hi = 0.0, 65535.0 if img.mode.startswith("I;16") or hi > 255 else 255.0
    scale = np.float32(255.0 / ((hi - lo) or 1.0))
    w, h = img.size
    out = np.empty((h, w), dtype=np.uint8)
    step = max(1, 2**22 // max(1, w * 4))  # about 4 MiB of float32 per band
    for top in range(0, h, step):
        # a copy (np.array): asarray of an "F" image is a read-only view of Pillow's own buffer
        band = np.array(img.crop((0, top, w, min(h, top + step))), dtype=np.float32)
        if lo:
            band -= np.float32(lo)
        band *= scale
        np.nan_to_num(band, copy=False, nan=0.0, posinf=255.0, neginf=0.0)  # NaN samples: black, not garbage
        np.clip(band, 0, 255, out=band)
        out[top : top + len(band)] = band
    return Image.fromarray(out, "L")


def _short(e: Exception) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the library put in it
    return msg if len(msg) <= 80 else msg[:77] + "..."
