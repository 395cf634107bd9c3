"""flickr.photos.search semantics: parameter parsing, matching, sort orders and the 4,000 cap."""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .corpus import Photo, tokens
from .errors import ApiError

SORTS = (
    "date-posted-desc",
    "date-posted-asc",
    "date-taken-desc",
    "date-taken-asc",
    "interestingness-desc",
    "interestingness-asc",
    "relevance",
)
DEFAULT_SORT = "date-posted-desc"  # unknown values (e.g. the seeds' sort='recent') fall back to it
DEFAULT_PER_PAGE, MAX_PER_PAGE = 100, 500
PAST_CAP_MODES = ("repeat", "empty", "error20")
# content_type: 1 photos, 2 screenshots, 3 other, 4-7 combinations
CONTENT_TYPES = {1: {1}, 2: {2}, 3: {3}, 4: {1, 2}, 5: {2, 3}, 6: {1, 3}, 7: {1, 2, 3}}
# params that do not change which photos a search returns (for drift bookkeeping)
NON_QUERY_PARAMS = {"page", "per_page", "extras", "format", "nojsoncallback", "jsoncallback", "api_key", "method"}
_TERM_RE = re.compile(r'"([^"]*)"|(\S+)')


@dataclass(frozen=True)
class Query:
    phrases: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tag_mode: str = "any"
    sort: str = DEFAULT_SORT
    licenses: frozenset[int] | None = None
    min_upload: int | None = None
    max_upload: int | None = None
    min_taken: str | None = None
    max_taken: str | None = None
    media: str = "all"
    content_types: frozenset[int] | None = None
    user_id: str | None = None

    @property
    def words(self) -> list[str]:
        return [w for phrase in self.phrases for w in phrase]


def _parse_date(value: str | None) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    value = str(value).strip()
    if value.isdigit():
        return int(value)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(value, fmt))
        except ValueError:
            continue
    return None


def _mysql(ts: int | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _parse_text(text: str) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    phrases, excluded = [], []
    for quoted, bare in _TERM_RE.findall(text or ""):
        if bare.startswith("-") and len(bare) > 1:
            excluded.extend(tokens(bare[1:]))
            continue
        words = tuple(tokens(quoted if quoted else bare))
        if words:
            phrases.append(words)
    return tuple(phrases), tuple(excluded)


def _int_set(value: str | None) -> frozenset[int] | None:
    if value is None or str(value).strip() == "":
        return None
    return frozenset(int(v) for v in str(value).split(",") if v.strip().lstrip("-").isdigit())


def parse_query(params: Mapping[str, str], known_owners: Iterable[str] | None = None) -> Query:
    """Build a Query from request params, raising ApiError the way Flickr does."""
    phrases, excluded = _parse_text(params.get("text", ""))
    tags = tuple(t.strip().lower() for t in params.get("tags", "").split(",") if t.strip())
    tag_mode = "all" if params.get("tag_mode", "any").lower() == "all" else "any"
    if tag_mode == "all" and len(tags) > 20:
        raise ApiError(1, "Too many tags in ALL query")
    user_id = params.get("user_id") or None
    if user_id and known_owners is not None and user_id not in known_owners:
        raise ApiError(2)
    dates = [
        _parse_date(params.get(k)) for k in ("min_upload_date", "max_upload_date", "min_taken_date", "max_taken_date")
    ]
    if not (phrases or tags or user_id or any(d is not None for d in dates)):
        raise ApiError(3)
    for low, high in (dates[0:2], dates[2:4]):
        if low is not None and high is not None and low > high:
            raise ApiError(18)
    sort = params.get("sort", DEFAULT_SORT)
    content = _int_set(params.get("content_type"))
    media = params.get("media", "all").lower()
    return Query(
        phrases=phrases,
        excluded=excluded,
        tags=tags,
        tag_mode=tag_mode,
        sort=sort if sort in SORTS else DEFAULT_SORT,
        licenses=_int_set(params.get("license")),
        min_upload=dates[0],
        max_upload=dates[1],
        min_taken=_mysql(dates[2]),
        max_taken=_mysql(dates[3]),
        media=media if media in ("photos", "videos") else "all",
        content_types=frozenset(t for c in content for t in CONTENT_TYPES.get(c, ())) if content else None,
        user_id=user_id,
    )


def _text_matches(photo: Photo, q: Query) -> bool:
    index = photo.searchable
    if any(f" {' '.join(p)} " not in index["text"] for p in q.phrases):
        return False
    return not any(f" {w} " in index["text"] for w in q.excluded)


def _tags_match(photo: Photo, q: Query) -> bool:
    if not q.tags:
        return True
    have = photo.searchable["tags"]
    return all(t in have for t in q.tags) if q.tag_mode == "all" else any(t in have for t in q.tags)


def matches(photo: Photo, q: Query) -> bool:
    checks = (
        q.licenses is None or photo.license in q.licenses,
        q.min_upload is None or photo.date_upload >= q.min_upload,
        q.max_upload is None or photo.date_upload <= q.max_upload,
        q.min_taken is None or photo.date_taken >= q.min_taken,
        q.max_taken is None or photo.date_taken <= q.max_taken,
        q.media == "all" or photo.media == q.media[:-1],
        q.content_types is None or photo.content_type in q.content_types,
        q.user_id is None or photo.owner == q.user_id,
    )
    return all(checks) and _tags_match(photo, q) and _text_matches(photo, q)


def relevance(photo: Photo, q: Query) -> float:
    """Tags weigh most, then title, then description; interestingness breaks ties."""
    index, score = photo.searchable, 0.0
    for word in q.words + list(q.tags):
        score += 3 * (word in index["tags"]) + 2 * (word in index["title"]) + (word in index["desc"])
    return score + photo.interestingness


def sort_photos(photos: list[Photo], q: Query) -> list[Photo]:
    if q.sort == "relevance":
        return sorted(photos, key=lambda p: (-relevance(p, q), int(p.id)))
    field_name, direction = q.sort.rsplit("-", 1)
    attr = {"date-posted": "date_upload", "date-taken": "date_taken", "interestingness": "interestingness"}[field_name]
    ordered = sorted(photos, key=lambda p: (getattr(p, attr), int(p.id)))
    return ordered[::-1] if direction == "desc" else ordered


def search(photos: Iterable[Photo], q: Query) -> list[Photo]:
    return sort_photos([p for p in photos if matches(p, q)], q)


def paging(params: Mapping[str, str]) -> tuple[int, int]:
    """(page, per_page): per_page defaults to 100 and is clamped to 1..500; page is at least 1."""

    def as_int(name: str, default: int) -> int:
        try:
            return int(str(params.get(name, default)).strip())
        except ValueError:
            return default

    per_page = min(MAX_PER_PAGE, max(1, as_int("per_page", DEFAULT_PER_PAGE)))
    return max(1, as_int("page", 1)), per_page


def paginate(results: list, page: int, per_page: int, cap: int = 4000, past_cap: str = "repeat") -> list:
    """Slice one page; only the first ``cap`` results are reachable (Flickr's 4,000)."""
    reachable = min(len(results), cap)
    offset = (page - 1) * per_page
    if offset < reachable:
        return results[offset : min(offset + per_page, reachable)]
    if len(results) <= cap or reachable == 0:
        return []
    if past_cap == "empty":
        return []
    if past_cap == "error20":
        raise ApiError(20)
    last_start = ((reachable - 1) // per_page) * per_page
    return results[last_start:reachable]


def page_count(total: int, per_page: int) -> int:
    return math.ceil(total / per_page) if total else 0


def search_key(params: Mapping[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in params.items() if k not in NON_QUERY_PARAMS and not k.startswith("oauth_")))
