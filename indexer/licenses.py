"""Flickr licence ids (flickr.photos.licenses.getInfo), for attribution without an extra API call."""

LICENSES: dict[int, tuple[str, str]] = {
    0: ("All Rights Reserved", ""),
    1: ("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    9: ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    11: ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    12: ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    13: ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    14: ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    15: ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    16: ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
}


# Most permissive first, for choosing which copy of a duplicate to keep. The order is Creative Commons' own
# "licence spectrum" (public domain, CC0, BY, BY-SA, BY-NC, BY-NC-SA, BY-ND, BY-NC-ND, all rights reserved):
# public-domain statements first (an explicit CC0 waiver ahead of a mark or a "no known restrictions" note), then
# the CC licences by how much reuse they allow, 4.0 ahead of 2.0 within a kind (international, no porting).
# Unknown ids and photos without a licence (local folders) rank with All Rights Reserved, last.
PERMISSIVENESS: tuple[int, ...] = (9, 10, 8, 7, 11, 4, 12, 5, 14, 2, 15, 1, 13, 6, 16, 3, 0)


def license_rank(license_id: int | None) -> int:
    """0 for the most permissive licence; larger is more restrictive (unknown or None: the last rank)."""
    try:
        return PERMISSIVENESS.index(license_id)  # type: ignore[arg-type]
    except ValueError:
        return len(PERMISSIVENESS) - 1


def license_name(license_id: int | None) -> str:
    if license_id is None:
        return ""
    return LICENSES.get(license_id, (f"license {license_id}", ""))[0]


def parse_license_ids(text: str) -> list[int]:
    """'4,5, 9' -> [4, 5, 9]; rejects unknown ids with a message listing the valid ones."""
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) not in LICENSES:
            valid = ", ".join(f"{k} {v[0]}" for k, v in LICENSES.items())
            raise ValueError(f"unknown Flickr license id {part!r}; valid ids: {valid}")
        ids.append(int(part))
    return ids
