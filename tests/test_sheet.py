import base64
import io
import re

import pytest
from PIL import Image

from imgidx.search.sheet import contact_sheet, render_sheet, thumbnail_uri

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def photos(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGBA", (400, 200), (255, 0, 0, 128)).save(wide)
    full = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(full, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.getvalue()[:300])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    return {"wide": wide, "truncated": truncated, "text": text, "missing": tmp_path / "gone.jpg"}


def _items(photos):
    return [
        {"rank": 1, "id": 11, "title": "a cat", "distance": 0.41234567, "z": -0.5, "flagged": False,
         "page_url": "https://www.flickr.com/photos/x/11?a=1&b=2", "path": photos["wide"]},
        {"rank": 2, "id": "12", "title": HOSTILE, "distance": 1.5, "z": 4.25, "flagged": True,
         "reason": "z 4.25 > 3 <b>", "page_url": "javascript:alert(1)", "path": photos["missing"]},
    ]  # fmt: skip


def test_hostile_text_is_escaped_everywhere(photos):
    html = render_sheet(_items(photos), title=f"cat {HOSTILE}")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "<title>cat &lt;script&gt;" in html
    assert "z 4.25 &gt; 3 &lt;b&gt;" in html


def test_thumbnails_are_embedded_as_jpeg_data_uris(photos):
    html = render_sheet(_items(photos)[:1], title="cats")
    (encoded,) = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html)
    thumb = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert thumb.format == "JPEG" and thumb.size == (160, 80)
    assert thumb.getpixel((80, 40))[0] > 200  # half-transparent red on white, not on black


def test_no_external_resources_are_referenced(photos):
    html = render_sheet(_items(photos), title="cats")
    assert not re.search(r'src="(?!data:)', html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html


def test_outliers_get_a_red_border_and_a_badge(photos):
    html = render_sheet(_items(photos), title="cats")
    assert html.count('<figure class="card flagged">') == 1
    assert html.count('<figure class="card">') == 1
    assert html.count('<span class="badge">outlier</span>') == 1
    assert "2 photos, 1 flagged as outliers" in html
    assert "distance 0.4123 · z -0.50" in html


def test_only_web_page_links_become_links(photos):
    html = render_sheet(_items(photos), title="cats")
    assert 'href="https://www.flickr.com/photos/x/11?a=1&amp;b=2"' in html
    assert "javascript:" not in html


@pytest.mark.parametrize(
    ("key", "reason"),
    [("missing", "file not found"), ("text", "not a recognised image format"), ("truncated", "corrupt or truncated")],
)
def test_unusable_files_become_grey_boxes_that_say_why(photos, key, reason):
    uri, why = thumbnail_uri(photos[key])
    assert uri is None and why.startswith(reason)
    html = render_sheet([{"rank": 1, "id": 1, "title": "t", "path": photos[key]}], title="cats")
    assert f'<div class="missing">{reason}' in html
    assert "data:image/jpeg" not in html


def test_no_path_is_a_placeholder_not_an_error():
    assert thumbnail_uri(None) == (None, "no local file")


def test_contact_sheet_writes_the_file_atomically(photos, tmp_path):
    out = tmp_path / "sheets" / "cat.html"
    written = contact_sheet(_items(photos), "cats", out)
    assert written == out
    assert out.read_text(encoding="utf-8") == render_sheet(_items(photos), "cats")
    assert [p.name for p in out.parent.iterdir()] == ["cat.html"]
