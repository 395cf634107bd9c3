"""Hostile and unusual image bodies, reusable by any test: ``make_variant(name) -> (bytes, content_type)``.

Every body is deterministic. ``VARIANTS`` lists the names; ``EXPECTED`` says what Pillow does with each
("ok" decodes, "truncated" opens but fails on load, "unidentified" cannot be opened, "bomb" raises
DecompressionBombError on open). The EXIF-orientation bodies store an upright picture (red top-left
corner, blue bar along the top, 120×80 landscape) transformed by the inverse of that orientation, so
``ImageOps.exif_transpose`` gives the upright picture back.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

from PIL import Image, ImageCms, ImageDraw

OVERSIZED_BYTES = 30 * 1024 * 1024
EXIF_ORIENTATION_TAG = 0x0112
# what ImageOps.exif_transpose applies for each orientation, and its inverse (used to store the body)
_TRANSPOSE = Image.Transpose
_INVERSE = {
    2: _TRANSPOSE.FLIP_LEFT_RIGHT, 3: _TRANSPOSE.ROTATE_180, 4: _TRANSPOSE.FLIP_TOP_BOTTOM, 5: _TRANSPOSE.TRANSPOSE,
    6: _TRANSPOSE.ROTATE_90, 7: _TRANSPOSE.TRANSVERSE, 8: _TRANSPOSE.ROTATE_270,
}  # fmt: skip


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def upright_picture(size: tuple[int, int] = (120, 80)) -> Image.Image:
    """Asymmetric RGB picture: red square top-left, blue bar along the top edge, green bottom-right."""
    w, h = size
    image = Image.new("RGB", size, (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, w - 1, h // 8), fill=(0, 0, 255))
    draw.rectangle((0, 0, w // 4, h // 4), fill=(255, 0, 0))
    draw.rectangle((w * 3 // 4, h * 3 // 4, w - 1, h - 1), fill=(0, 160, 0))
    return image


def _gradient(size: tuple[int, int] = (160, 120)) -> Image.Image:
    w, h = size
    return Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
            Image.new("L", size, 128),
        ),
    ).resize((w, h))


def exif_oriented_jpeg(orientation: int) -> bytes:
    if orientation not in _INVERSE:
        raise ValueError(f"orientation must be 2..8; received {orientation}")
    stored = upright_picture().transpose(_INVERSE[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return _save(stored, "JPEG", quality=95, exif=exif.tobytes())


def _png_bomb(width: int = 20_000, height: int = 10_000) -> bytes:
    """A real 1-bit PNG of width×height (>179 Mpx by default) that compresses to a few KiB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 500) for _ in range(height // 500)) + packer.compress(row * (height % 500))
    idat += packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A tiny JPEG whose frame header declares width×height."""
    body = bytearray(_save(Image.new("RGB", (8, 8), (90, 90, 90)), "JPEG"))
    sof = body.index(b"\xff\xc0")
    body[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(body)


def _animated_gif() -> bytes:
    frames = [Image.new("P", (64, 48), i * 40) for i in range(4)]
    for i, frame in enumerate(frames):
        ImageDraw.Draw(frame).rectangle((i * 12, 10, i * 12 + 12, 30), fill=255)
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _png_palette() -> bytes:
    image = _gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(image, "PNG", transparency=0)


def _png_rgba() -> bytes:
    image = _gradient().convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    return _save(image, "PNG")


def _png_16bit_gray() -> bytes:
    image = Image.linear_gradient("L").resize((128, 96)).convert("I")
    image = image.point(lambda value: value * 257).convert("I;16")
    return _save(image, "PNG")


def _icc_jpeg() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _save(_gradient(), "JPEG", quality=90, icc_profile=profile)


def _oversized() -> bytes:
    head = _save(_gradient(), "JPEG")
    return head + b"\x00" * (OVERSIZED_BYTES - len(head))


_JPEG, _PNG = "image/jpeg", "image/png"
_MAKERS = {
    "progressive_jpeg": (lambda: _save(_gradient((320, 240)), "JPEG", progressive=True, quality=85), _JPEG),
    "png_rgba": (_png_rgba, _PNG),
    "png_palette": (_png_palette, _PNG),
    "png_16bit_gray": (_png_16bit_gray, _PNG),
    "animated_gif": (_animated_gif, "image/gif"),
    "webp_as_jpeg": (lambda: _save(_gradient(), "WEBP", quality=80), _JPEG),
    "cmyk_jpeg": (lambda: _save(_gradient().convert("CMYK"), "JPEG", quality=90), _JPEG),
    "grayscale_jpeg": (lambda: _save(_gradient().convert("L"), "JPEG", quality=90), _JPEG),
    "icc_jpeg": (_icc_jpeg, _JPEG),
    **{f"exif_orientation_{o}": (functools.partial(exif_oriented_jpeg, o), _JPEG) for o in range(2, 9)},
    "truncated_jpeg": (lambda: (lambda b: b[: len(b) * 6 // 10])(_save(_gradient((320, 240)), "JPEG")), _JPEG),
    "random_bytes": (lambda: random.Random("variant-random").randbytes(4096), _JPEG),
    "zero_bytes": (lambda: b"", _JPEG),
    "html_as_jpeg": (lambda: b"<!DOCTYPE html><html><body><h1>Access denied</h1></body></html>\n", _JPEG),
    "decompression_bomb": (_png_bomb, _PNG),
    "decompression_bomb_jpeg": (_jpeg_bomb, _JPEG),
    "oversized_body": (_oversized, _JPEG),
    "one_pixel_jpeg": (lambda: _save(Image.new("RGB", (1, 1), (255, 0, 0)), "JPEG"), _JPEG),
    "one_pixel_png": (lambda: _save(Image.new("RGBA", (1, 1), (0, 0, 255, 128)), "PNG"), _PNG),
}
VARIANTS: tuple[str, ...] = tuple(_MAKERS)
EXPECTED: dict[str, str] = {
    **dict.fromkeys(VARIANTS, "ok"),
    "truncated_jpeg": "truncated",
    "random_bytes": "unidentified",
    "zero_bytes": "unidentified",
    "html_as_jpeg": "unidentified",
    "decompression_bomb": "bomb",
    "decompression_bomb_jpeg": "bomb",
}


@functools.cache
def make_variant(name: str) -> tuple[bytes, str]:
    """(body, Content-Type the photo host sends) for a variant name from VARIANTS."""
    if name not in _MAKERS:
        raise ValueError(f"unknown image variant; received {name!r}; known: {', '.join(VARIANTS)}")
    maker, content_type = _MAKERS[name]
    return maker(), content_type
