"""Write a ranking as one self-contained HTML contact sheet: thumbnails, scores, outliers marked in red.

Self-contained on purpose: thumbnails are embedded as base64 JPEG data URIs and the CSS is inline, so the
file can be mailed or opened offline, and the Content-Security-Policy forbids loading anything else.
Every piece of text is HTML-escaped: Flickr titles and reasons are untrusted user text.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imgidx.indexer import atomic
from imgidx.indexer.errors import ImageError
from imgidx.indexer.images import thumbnail

THUMB_PX = 160  # longest side of an embedded thumbnail

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; } p.summary { color: #555; margin: 0 0 1rem; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { position: relative; width: 172px; margin: 0; padding: 4px; background: #fff; border: 2px solid #ddd; }
.card.flagged { border: 3px solid #d00; }
.badge { position: absolute; top: 6px; left: 6px; background: #d00; color: #fff; font-size: .75rem;
  font-weight: bold; padding: 1px 5px; border-radius: 3px; }
.thumb { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center; margin: auto; }
.missing { width: 160px; height: 120px; background: #bbb; color: #333; font-size: .75rem; display: flex;
  align-items: center; justify-content: center; text-align: center; padding: 4px; box-sizing: border-box; }
figcaption { font-size: .75rem; line-height: 1.3; overflow-wrap: anywhere; }
.title { font-weight: bold; } .reason { color: #a00; }
"""
_STATS = (("score", 4), ("distance", 4), ("z", 2))  # item keys shown under a photo, with decimals
# Inline styles and data: images only; no scripts, no network.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def contact_sheet(items: Iterable[Mapping[str, Any]], title: str, path: str | os.PathLike[str]) -> Path:
    """Render ``items`` to an HTML file at ``path`` (written atomically) and return the path.

    Each item is a dict with any of: rank, id, title, score or distance, z, flagged, reason, page_url, path
    (a local image file; a missing or undecodable one becomes a grey box saying why).
    """
    document = render_sheet(items, title)
    return atomic.write_text(Path(path), document)


def render_sheet(items: Iterable[Mapping[str, Any]], title: str) -> str:
    """The HTML text of a contact sheet (what :func:`contact_sheet` writes)."""
    rows = list(items)
    cards = [_card(item) for item in rows]
    flagged = sum(bool(item.get("flagged")) for item in rows)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{_esc(title)}</h1>",
            f'<p class="summary">{len(cards)} photos, {flagged} flagged as outliers</p>',
            '<div class="grid">',
            *cards,
            "</div></body></html>",
            "",
        ]
    )


def thumbnail_uri(path: str | os.PathLike[str] | None) -> tuple[str | None, str]:
    """(data URI of a JPEG thumbnail, "") or (None, why there is no thumbnail)."""
    if path is None or str(path) == "":
        return None, "no local file"
    try:
        flat = thumbnail(Path(path).read_bytes(), THUMB_PX)  # transparent areas on white, as the index sees them
    except FileNotFoundError:
        return None, "file not found"
    except OSError as e:
        return None, f"unreadable file ({type(e).__name__})"
    except ImageError as e:
        return None, e.reason
    buffer = io.BytesIO()
    flat.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), ""


def _card(item: Mapping[str, Any]) -> str:
    flagged = bool(item.get("flagged"))
    uri, why = thumbnail_uri(item.get("path"))
    caption = _esc(item.get("title") or "")
    picture = f'<img src="{uri}" alt="{caption}">' if uri else f'<div class="missing">{_esc(why)}</div>'
    url = _safe_url(item.get("page_url"))
    title = f'<a href="{_esc(url)}" rel="noopener noreferrer">{caption or _esc(url)}</a>' if url else caption
    stats = [f"{key} {_number(item[key], digits)}" for key, digits in _STATS if item.get(key) is not None]
    lines = [
        f'<div class="rank">#{_esc(item.get("rank", ""))} · id {_esc(item.get("id", ""))}</div>',
        f'<div class="title">{title}</div>' if title else "",
        f'<div class="stats">{" · ".join(stats)}</div>' if stats else "",
        f'<div class="reason">{_esc(item["reason"])}</div>' if item.get("reason") else "",
    ]
    badge = '<span class="badge">outlier</span>' if flagged else ""
    return (
        f'<figure class="card{" flagged" if flagged else ""}">{badge}<div class="thumb">{picture}</div>'
        f"<figcaption>{''.join(lines)}</figcaption></figure>"
    )


def _safe_url(url: object) -> str | None:
    # Only web links: a hostile "javascript:" or "data:" URL must not become a clickable href.
    if not isinstance(url, str) or urlsplit(url.strip()).scheme.lower() not in ("http", "https"):
        return None
    return url.strip()


def _number(value: object, digits: int) -> str:
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)):
        return f"{float(value):.{digits}f}"
    return _esc(value)  # inf, nan or a non-number: show it as text


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)
