"""Flickr answer bodies: photo dicts with extras, getSizes/getInfo/licenses, and JSON / JSONP / XML output.

Dicts follow Flickr's JSON shape, where XML attributes become keys, element text becomes ``_content``
and repeated child elements become lists; ``to_xml`` reverses that mapping for ``format=rest``.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape, quoteattr

from .corpus import LICENSES, SIZES, Photo

KNOWN_EXTRAS = {
    "description", "license", "date_upload", "date_taken", "owner_name", "original_format", "o_dims",
    "tags", "media", "views", "url_sq", "url_q", "url_t", "url_s", "url_n", "url_m", "url_z", "url_c",
    "url_l", "url_o",
}  # fmt: skip


def static_url(photo_host: str, photo: Photo, size: str) -> str:
    suffix = SIZES[size][0]
    secret = photo.original_secret if size == "o" else photo.secret
    return f"{photo_host}/{photo.server}/{photo.id}_{secret}{'_' + suffix if suffix else ''}.jpg"


def parse_extras(value: str | None) -> set[str]:
    return {e.strip().lower() for e in (value or "").split(",") if e.strip()}


def photo_summary(photo: Photo, extras: set[str], photo_host: str) -> dict:
    """One entry of photos.photo. Numbers are strings where old Flickr answers had strings."""
    d: dict = {
        "id": photo.id, "owner": photo.owner, "secret": photo.secret, "server": photo.server,
        "farm": photo.farm, "title": photo.title, "ispublic": 1, "isfriend": 0, "isfamily": 0,
    }  # fmt: skip
    if "description" in extras:
        d["description"] = {"_content": photo.description}
    if "license" in extras:
        d["license"] = str(photo.license)
    if "date_upload" in extras:
        d["dateupload"] = str(photo.date_upload)
    if "date_taken" in extras:
        d.update(datetaken=photo.date_taken, datetakengranularity="0", datetakenunknown="0")
    if "owner_name" in extras:
        d["ownername"] = photo.owner_name
    if "original_format" in extras and "o" in photo.sizes:
        d.update(originalsecret=photo.original_secret, originalformat="jpg")
    if "o_dims" in extras:
        d.update(o_width=str(photo.width), o_height=str(photo.height))
    if "tags" in extras:
        d["tags"] = " ".join(photo.tags)
    if "media" in extras:
        d.update(media=photo.media, media_status="ready")
    if "views" in extras:
        d["views"] = str(photo.views)
    for key in SIZES:
        if f"url_{key}" in extras and key in photo.sizes:
            width, height = photo.size_dims(key)
            d[f"url_{key}"] = static_url(photo_host, photo, key)
            d[f"height_{key}"], d[f"width_{key}"] = str(height), str(width)
    return d


def photos_envelope(page_photos: list[Photo], extras: set[str], photo_host: str, page: int, pages: int,
                    per_page: int, total: int) -> dict:  # fmt: skip
    return {
        "photos": {
            "page": page,
            "pages": pages,
            "perpage": per_page,
            "total": str(total),  # a string in older answers: clients must coerce
            "photo": [photo_summary(p, extras, photo_host) for p in page_photos],
        }
    }


def licenses_info() -> dict:
    order = [4, 6, 3, 2, 1, 5, 7, 8, 9, 10, 0, 11, 12, 13, 14, 15, 16]  # unsorted, like Flickr
    return {"licenses": {"license": [{"id": i, "name": LICENSES[i][0], "url": LICENSES[i][1]} for i in order]}}


def sizes_info(photo: Photo, photo_host: str) -> dict:
    sizes = []
    for key, (_suffix, _edge, label, _square) in SIZES.items():
        if key in photo.sizes:
            width, height = photo.size_dims(key)
            sizes.append({
                "label": label, "width": width, "height": height, "source": static_url(photo_host, photo, key),
                "url": f"{photo.page_url}sizes/{key}/", "media": photo.media,
            })  # fmt: skip
    return {"sizes": {"canblog": 0, "canprint": 0, "candownload": int("o" in photo.sizes), "size": sizes}}


def photo_info(photo: Photo) -> dict:
    info: dict = {
        "id": photo.id, "secret": photo.secret, "server": photo.server, "farm": photo.farm,
        "dateuploaded": str(photo.date_upload), "isfavorite": 0, "license": str(photo.license),
        "safety_level": "0", "rotation": 0,
        "owner": {"nsid": photo.owner, "username": photo.owner_name, "realname": photo.owner_name,
                  "location": "", "path_alias": None},
        "title": {"_content": photo.title},
        "description": {"_content": photo.description},
        "visibility": {"ispublic": 1, "isfriend": 0, "isfamily": 0},
        "dates": {"posted": str(photo.date_upload), "taken": photo.date_taken, "takengranularity": 0,
                  "takenunknown": "0", "lastupdate": str(photo.date_upload)},
        "views": str(photo.views),
        "tags": {"tag": [{"id": f"{photo.id}-{t}", "author": photo.owner, "raw": t, "_content": t,
                          "machine_tag": 0} for t in photo.tags]},
        "urls": {"url": [{"type": "photopage", "_content": photo.page_url}]},
        "media": photo.media,
    }  # fmt: skip
    if "o" in photo.sizes:
        info.update(originalsecret=photo.original_secret, originalformat="jpg")
    return {"photo": info}


def echo(params: dict) -> dict:
    return {k: {"_content": v} for k, v in params.items() if not k.startswith("oauth_")}


# ---- serialisation ----


def to_json(payload: dict, stat: str = "ok", callback: str | None = None) -> bytes:
    text = json.dumps({**payload, "stat": stat}, ensure_ascii=False, separators=(",", ":"))
    return (f"{callback}({text})" if callback else text).encode("utf-8")


def _xml_element(name: str, obj) -> str:
    if not isinstance(obj, dict):
        return f"<{name}>{escape(str(obj))}</{name}>"
    attrs, children, text = [], [], ""
    for key, value in obj.items():
        if key == "_content":
            text = escape(str(value))
        elif isinstance(value, dict):
            children.append(_xml_element(key, value))
        elif isinstance(value, list):
            children.extend(_xml_element(key, item) for item in value)
        elif value is not None:
            attrs.append(f" {key}={quoteattr(str(value), {chr(10): '&#10;', chr(9): '&#9;'})}")
    inner = text + "".join(children)
    return f"<{name}{''.join(attrs)}>{inner}</{name}>" if inner else f"<{name}{''.join(attrs)} />"


def to_xml(payload: dict, stat: str = "ok") -> bytes:
    body = "".join(_xml_element(k, v) for k, v in payload.items())
    return f'<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="{stat}">\n{body}\n</rsp>\n'.encode()


def render_ok(payload: dict, fmt: str, params: dict) -> tuple[bytes, str]:
    if fmt == "json":
        callback = None if params.get("nojsoncallback") == "1" else params.get("jsoncallback", "jsonFlickrApi")
        ctype = "application/json; charset=utf-8" if callback is None else "text/javascript; charset=utf-8"
        return to_json(payload, callback=callback), ctype
    return to_xml(payload), "text/xml; charset=utf-8"


def render_fail(code: int, message: str, fmt: str, params: dict) -> tuple[bytes, str]:
    if fmt == "json":
        callback = None if params.get("nojsoncallback") == "1" else params.get("jsoncallback", "jsonFlickrApi")
        body = to_json({"code": code, "message": message}, stat="fail", callback=callback)
        return body, "application/json; charset=utf-8" if callback is None else "text/javascript; charset=utf-8"
    err = f'<err code="{code}" msg={quoteattr(message)} />'
    return f'<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="fail">\n\t{err}\n</rsp>\n'.encode(), "text/xml"
