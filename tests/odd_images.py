"""Every Pillow mode and odd format a user can meet, made with Pillow in the test (no binary fixtures): the corpus
that indexer/images.py must turn into pixels or a one-line ImageError, never anything else.

`corpus()` -> {file name: bytes}. Names end in the extension a user's file would have; the decoder sniffs the
content, never the name. Truncated files are cut at several points of a few formats: some of those cuts still
decode (Pillow fills the missing rows), others are refused; both are fine, a traceback is not."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageCms

SIDE = (96, 72)  # above images.MIN_SIDE: every good one is a usable photo


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_picture() -> Image.Image:
    """The picture every odd file of the corpus shows (a colour ramp with a red mark top-left)."""
    return _rgb()


def _rgb(seed: int = 0) -> Image.Image:
    w, h = SIDE
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y + 40 * seed) % 256], axis=-1).astype(np.uint8)
    arr[: h // 3, : w // 3] = (255, 0, 0)  # an asymmetric mark: every orientation differs
    return Image.fromarray(arr, "RGB")


def _grey_array(dtype, top: float) -> np.ndarray:
    w, h = SIDE
    return (np.linspace(0, top, w * h).reshape(h, w)).astype(dtype)


def _modes() -> dict[str, bytes]:
    rgb = _rgb()
    out = {
        "mode_1.png": _save(rgb.convert("1"), "PNG"),
        "mode_1.tif": _save(rgb.convert("1"), "TIFF"),
        "mode_L.png": _save(rgb.convert("L"), "PNG"),
        "mode_LA.png": _save(rgb.convert("LA"), "PNG"),
        "mode_P.gif": _save(rgb.convert("P"), "GIF"),
        "mode_P_transparency.png": _save(rgb.convert("P"), "PNG", transparency=0),
        "mode_P_transparency.gif": _save(rgb.convert("P"), "GIF", transparency=3),
        "mode_RGBA.png": _save(rgb.convert("RGBA"), "PNG"),
        "mode_RGBA.webp": _save(rgb.convert("RGBA"), "WEBP"),
        "mode_RGBX.tif": _save(rgb.convert("RGBX"), "TIFF"),
        "mode_CMYK.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "mode_CMYK.tif": _save(rgb.convert("CMYK"), "TIFF"),
        "mode_YCbCr.jpg": _save(rgb.convert("YCbCr"), "JPEG"),
        "mode_YCbCr.tif": _save(rgb.convert("YCbCr"), "TIFF"),
        "mode_LAB.tif": _save(rgb.convert("LAB"), "TIFF"),
        "mode_I.tif": _save(Image.fromarray(_grey_array(np.int32, 70000)), "TIFF"),
        "mode_I_negative.tif": _save(Image.fromarray(_grey_array(np.int32, 9) - 5), "TIFF"),
        "mode_I16.png": _save(Image.fromarray(_grey_array(np.uint16, 65535)), "PNG"),
        "mode_I16.tif": _save(Image.fromarray(_grey_array(np.uint16, 65535)), "TIFF"),
        "mode_I16B.tif": _save(Image.frombytes("I;16B", SIDE, _grey_array(">u2", 65535).tobytes()), "TIFF"),
        "mode_F.tif": _save(Image.fromarray(_grey_array(np.float32, 1.0)), "TIFF"),
        "mode_F_wide.tif": _save(Image.fromarray(_grey_array(np.float32, 1e6) - 5e5), "TIFF"),
        "mode_F_nan.tif": _save(Image.fromarray(np.full(SIDE[::-1], np.nan, np.float32)), "TIFF"),
        "mode_F_inf.tif": _save(Image.fromarray(np.full(SIDE[::-1], np.inf, np.float32)), "TIFF"),
        "rgb_16bit.png": _png_rgb16(),
    }
    return out


def in_memory_modes() -> dict[str, Image.Image]:
    """Every mode Pillow has, as an in-memory image: PA, HSV, La, RGBa and the I;16 byte orders have no file format
    that Pillow writes (a plug-in or a caller's own Image can still hand them over)."""
    rgb = _rgb()
    out = {m: rgb.convert(m) for m in ("1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")}
    out["LAB"] = rgb.convert("LAB")
    out["HSV"] = rgb.convert("HSV")
    out["I"] = Image.fromarray(_grey_array(np.int32, 70000))
    out["F"] = Image.fromarray(_grey_array(np.float32, 1.0))
    for m in ("I;16", "I;16L", "I;16B", "I;16N"):
        dtype = {"I;16B": ">u2", "I;16L": "<u2"}.get(m, "=u2")
        out[m] = Image.frombytes(m, SIDE, _grey_array(dtype, 65535).tobytes())
    p = rgb.convert("P")
    p.info["transparency"] = 0
    out["P_transparency"] = p
    return out


def _png_rgb16() -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow reads it as RGB; written by hand: Pillow cannot write one)."""
    w, h = SIDE
    arr = (np.linspace(0, 65535, w * h * 3).reshape(h, w, 3)).astype(">u2")
    raw = b"".join(b"\x00" + arr[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _animations() -> dict[str, bytes]:
    frames = [_rgb(i) for i in range(3)]
    return {
        "multi_frame.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "multi_frame.tif": _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "multi_frame_mixed_modes.tif": _save(
            frames[0].convert("L"), "TIFF", save_all=True, append_images=[frames[1].convert("CMYK")]
        ),
        "animated.png": _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "animated.webp": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
        "animated_rgba.webp": _save(
            frames[0].convert("RGBA"), "WEBP", save_all=True, append_images=[f.convert("RGBA") for f in frames[1:]]
        ),
    }


def _icc() -> dict[str, bytes]:
    rgb = _rgb()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return {
        "icc_garbage.jpg": _save(rgb, "JPEG", icc_profile=b"\x00garbage" * 20),
        "icc_truncated.jpg": _save(rgb, "JPEG", icc_profile=srgb[: len(srgb) // 2]),
        "icc_garbage.png": _save(rgb, "PNG", icc_profile=b"not a profile at all"),
        "icc_rgb_on_grey.jpg": _save(rgb.convert("L"), "JPEG", icc_profile=srgb),
        "icc_rgb_on_cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG", icc_profile=srgb),
        "icc_garbage.tif": _save(rgb, "TIFF", icc_profile=b"\xff" * 64),
    }


def _orientations() -> dict[str, bytes]:
    out = {}
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        out[f"exif_orientation_{o}.jpg"] = _save(_rgb(), "JPEG", exif=exif.tobytes())
    bad = Image.Exif()
    bad[0x0112] = 99  # not an orientation
    out["exif_orientation_99.jpg"] = _save(_rgb(), "JPEG", exif=bad.tobytes())
    out["exif_garbage.jpg"] = _save(_rgb(), "JPEG", exif=b"Exif\x00\x00" + b"\xff" * 40)
    return out


def _truncated() -> dict[str, bytes]:
    rgb = _rgb()
    full = {
        "jpg": _save(rgb, "JPEG", quality=90),
        "progressive.jpg": _save(rgb, "JPEG", quality=90, progressive=True),
        "png": _save(rgb, "PNG"),
        "gif": _save(rgb.convert("P"), "GIF"),
        "webp": _save(rgb, "WEBP"),
        "tif": _save(rgb, "TIFF"),
        "16bit.tif": _save(Image.fromarray(_grey_array(np.uint16, 65535)), "TIFF"),
        "float.tif": _save(Image.fromarray(_grey_array(np.float32, 1.0)), "TIFF"),
        "bmp": _save(rgb, "BMP"),
    }
    out = {}
    for ext, data in full.items():
        for cut in (0.05, 0.3, 0.6, 0.95):
            out[f"truncated_{int(cut * 100):02d}.{ext}"] = data[: max(1, int(len(data) * cut))]
    return out


@functools.cache
def corpus() -> dict[str, bytes]:
    """Every odd file, by name (the extension a user's file would have). Made once per session: do not modify."""
    return {**_modes(), **_animations(), **_icc(), **_orientations(), **_truncated()}


def good(seed: int) -> bytes:
    """An ordinary photo (a JPEG) for the N good ones beside the hostile ones."""
    return _save(_rgb(seed).resize((160, 120)), "JPEG", quality=90)
