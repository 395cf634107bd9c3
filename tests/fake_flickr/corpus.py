"""Deterministic photo records for the fake Flickr: topics, owners, titles, sizes, licenses.

Records are cheap (no pixels): images are rendered on request by ``images.py``.
Search and sorting live in ``search.py``.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import random
import re
import threading
import time
from dataclasses import dataclass, field

# extras key -> (url suffix, longest edge or None for the original, getSizes label, square crop)
SIZES: dict[str, tuple[str, int | None, str, bool]] = {
    "sq": ("s", 75, "Square", True),
    "q": ("q", 150, "Large Square", True),
    "t": ("t", 100, "Thumbnail", False),
    "s": ("m", 240, "Small", False),
    "n": ("n", 320, "Small 320", False),
    "m": ("", 500, "Medium", False),
    "z": ("z", 640, "Medium 640", False),
    "c": ("c", 800, "Medium 800", False),
    "l": ("b", 1024, "Large", False),
    "o": ("o", None, "Original", False),
}
SUFFIX_TO_SIZE = {suffix: key for key, (suffix, *_rest) in SIZES.items()}

# flickr.photos.licenses.getInfo, ids 0-16 (spec §3)
LICENSES: dict[int, tuple[str, str]] = {
    0: ("All Rights Reserved", ""),
    1: ("Attribution-NonCommercial-ShareAlike License", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("Attribution-NonCommercial-NoDerivs License", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("Attribution-NoDerivs License", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    9: ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
    11: ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    12: ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    13: ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    14: ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    15: ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    16: ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
}

DEFAULT_COUNTS = {"cat": 4500, "dog": 1500, "car": 500, "lion": 500, "meme": 500}
FALLBACK_COUNT = 500
HOSTILE_TOPIC = "hostile"

# topic -> (nouns, extra tags, localised nouns: ru, ja, ar (RTL), he (RTL))
TOPIC_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "cat": (("cat", "kitten", "kitty"), ("feline", "pet", "whiskers", "tabby", "cute"), ("Кошка", "猫", "قطة", "חתול")),
    "dog": (("dog", "puppy", "doggo"), ("canine", "pet", "woof", "labrador", "park"), ("Собака", "犬", "كلب", "כלב")),
    "car": (
        ("car", "automobile", "roadster"),
        ("auto", "vintage", "wheels", "street", "chrome"),
        ("Машина", "車", "سيارة", "מכונית"),
    ),
    "lion": (
        ("lion", "lioness", "pride"),
        ("safari", "wildlife", "savanna", "mane", "africa"),
        ("Лев", "ライオン", "أسد", "אריה"),
    ),
    "meme": (
        ("meme", "lolz", "caption"),
        ("funny", "humor", "internet", "lol", "macro"),
        ("Мем", "ミーム", "ميم", "מם"),
    ),
}
# titles of non-cat photos that mention cats: the seeds' "maybe_cat" story (sort=recent gets noisy)
CAT_MENTIONS = {
    "lion": ("Big cat: {adj} lion at dawn", "The king of the cat family", "Wild cat {n} on the savanna"),
    "car": ("Cat-eye headlights on a {adj} car", "Cat {n} racing edition", "Black cat roadster"),
    "meme": ("Grumpy cat meme #{n}", "I can has cheezburger cat", "Ceiling cat is watching {n}"),
    "dog": ("Dog chasing a cat {n}",),
}
ADJECTIVES = ("sleepy", "happy", "old", "tiny", "grumpy", "golden", "wet", "curious", "lazy", "proud", "red", "blue")
PLACES = ("on the sofa", "in the garden", "at sunset", "in the snow", "by the window", "downtown", "at the zoo", "")
OWNER_NAMES = ("Anna", "Jürgen Müller", "山田太郎", "محمد علي", "Zoë O'Brien", "ørjan", "", "J. Smith", "Ирина", "dave")
START_TS = calendar.timegm((2006, 1, 1, 0, 0, 0))
END_TS = calendar.timegm((2024, 6, 30, 0, 0, 0))
WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class Photo:
    id: str
    topic: str
    owner: str
    owner_name: str
    secret: str
    original_secret: str
    server: str
    farm: int
    title: str
    description: str
    tags: tuple[str, ...]
    license: int
    date_upload: int
    date_taken: str
    width: int  # original dimensions
    height: int
    sizes: frozenset[str]
    media: str = "photo"
    content_type: int = 1
    interestingness: float = 0.0
    views: int = 0
    searchable: dict = field(default_factory=dict, compare=False, repr=False)

    def size_dims(self, key: str) -> tuple[int, int]:
        """Pixel size of the given extras size key ('sq', 'z', 'o', ...)."""
        edge, square = SIZES[key][1], SIZES[key][3]
        if square:
            return edge, edge
        if edge is None:
            return self.width, self.height
        scale = edge / max(self.width, self.height)
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))

    @property
    def page_url(self) -> str:
        return f"https://www.flickr.com/photos/{self.owner}/{self.id}/"


def tokens(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def _index(photo: Photo) -> Photo:
    photo.searchable.update(
        title=set(tokens(photo.title)),
        desc=set(tokens(photo.description)),
        tags={t.lower() for t in photo.tags},
        text=" " + " ".join(tokens(" ".join((photo.title, " ".join(photo.tags), photo.description)))) + " ",
    )
    return photo


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _sizes_and_dims(rng: random.Random) -> tuple[int, int, frozenset[str]]:
    roll = rng.random()
    if roll < 0.12:  # small originals: nothing above url_n
        longest = rng.randint(320, 499)
    elif roll < 0.18:
        longest = rng.randint(640, 1023)
    else:
        longest = rng.choice((1024, 1600, 2048, 3000, 4000))
    ratio = rng.choice((4 / 3, 3 / 2, 3 / 4, 2 / 3, 1.0, 16 / 9, 3.0, 1 / 3))
    width, height = (
        (longest, max(1, round(longest / ratio))) if ratio >= 1 else (max(1, round(longest * ratio)), longest)
    )
    sizes = {k for k, (_s, edge, _l, sq) in SIZES.items() if edge is not None and (sq or edge <= longest)}
    if longest >= 1024 and rng.random() < 0.15:
        sizes.add("o")
    return width, height, frozenset(sizes)


def _title(rng: random.Random, topic: str, n: int, mention_cat: bool) -> str:
    nouns, _tags, local = TOPIC_WORDS.get(topic, ((topic,), (), (topic,) * 4))
    noun, adj = rng.choice(nouns), rng.choice(ADJECTIVES)
    if mention_cat:
        return rng.choice(CAT_MENTIONS[topic]).format(adj=adj, n=n)
    if rng.random() >= 0.06:
        return f"{adj.capitalize()} {noun} {rng.choice(PLACES)}".strip()
    odd = (
        "",
        f"{rng.choice(local)} {n}",
        f"{local[2]} {noun}",  # Arabic, right-to-left
        f"{local[3]} \u200f{n}",  # Hebrew with a right-to-left mark
        f"🐾 {noun} 😺🔥 {n}",
        f"👨‍👩‍👧 family & {noun}",
        f"<b>{noun}</b> & \"quotes\" '{adj}'",
        f"{noun}\nsecond line\ttab",
        f"Cafe\u0301 {noun} {n}",
        f"{noun} " + "with a very long title " * rng.randint(10, 100),
        f"IMG_{n:04d}.JPG",
    )
    return rng.choice(odd)


def _make(rng: random.Random, owners: list, pid: str, topic: str, n: int, stamp: int, mention: bool) -> Photo:
    nouns, extra, local = TOPIC_WORDS.get(topic, ((topic,), (), ()))
    width, height, sizes = _sizes_and_dims(rng)
    tags = [nouns[0]] if rng.random() < 0.9 or topic == HOSTILE_TOPIC else []
    tags += rng.sample(extra, min(len(extra), rng.randint(0, 4)))
    if local and rng.random() < 0.05:
        tags.append(local[1].lower())
    if mention:
        tags.append("cat" if topic != "car" else "cateye")
    owner, owner_name = rng.choice(owners)
    hashtags = f"#{nouns[0]} #{extra[0]}" if extra else f"#{nouns[0]}"
    photo = Photo(
        id=pid, topic=topic, owner=owner, owner_name=owner_name, secret=_hex(rng, 10),
        original_secret=_hex(rng, 10), server=str(rng.randint(1, 65535)), farm=rng.randint(1, 9),
        title=_title(rng, topic, n, mention) if topic != HOSTILE_TOPIC else f"hostile image {n}",
        description=rng.choice(("", f"A {rng.choice(ADJECTIVES)} {nouns[0]}.", f"Shot on film. {hashtags}")),
        tags=tuple(dict.fromkeys(tags)),
        license=n if n < len(LICENSES) else (0 if rng.random() < 0.4 else rng.randint(1, 16)),
        date_upload=stamp, date_taken=_mysql_time(stamp - rng.randint(0, 3 * 365 * 86400)),
        width=width, height=height, sizes=sizes, media="video" if rng.random() < 0.02 else "photo",
        content_type=rng.choice((2, 3)) if topic == "meme" and rng.random() < 0.5 else 1,
        interestingness=rng.random(), views=int(rng.expovariate(1 / 300)),
    )  # fmt: skip
    return _index(photo)


@functools.lru_cache(maxsize=4)
def _build(seed: int, counts: tuple[tuple[str, int], ...], hostile: int) -> tuple:
    """(owners, photos in upload order, deleted ids); cached because records are immutable."""
    rng = random.Random(f"corpus-{seed}")
    owners = []
    for i in range(400):
        nsid = f"{rng.randint(10_000_000, 199_999_999)}@N{rng.randint(0, 8):02d}"
        owners.append((nsid, f"{rng.choice(OWNER_NAMES)}{i if i % 3 else ''}"))
    plan = [t for t, c in counts for _ in range(c)] + [HOSTILE_TOPIC] * hostile
    rng.shuffle(plan)
    stamps = sorted(rng.randint(START_TS, END_TS) for _ in plan)
    photos, deleted, next_id, seen = [], set(), 2_000_000_000, {}
    for topic, stamp in zip(plan, stamps, strict=True):
        next_id += rng.randint(1, 400_000)
        n = seen[topic] = seen.get(topic, -1) + 1
        # recent lion/car/meme photos often mention cats, a few dogs do too: sort=recent gets noisy
        recent = stamp > END_TS - 3 * 365 * 86400
        mention = topic in CAT_MENTIONS and recent and rng.random() < (0.05 if topic == "dog" else 0.4)
        photos.append(_make(rng, owners, str(next_id), topic, n, stamp, mention))
        if rng.random() < 0.01 and topic != HOSTILE_TOPIC:
            deleted.add(photos[-1].id)
    return tuple(owners), tuple(photos), frozenset(deleted)


class Corpus:
    """All photo records, by id and in upload order. Thread-safe for delete and append."""

    def __init__(self, seed: int = 0, counts: dict[str, int] | None = None, hostile: int = 0):
        self.seed = seed
        self.counts = dict(DEFAULT_COUNTS if counts is None else counts)
        self._lock = threading.Lock()
        owners, photos, deleted = _build(seed, tuple(self.counts.items()), hostile)
        self.owners: list[tuple[str, str]] = list(owners)
        self.photos: list[Photo] = list(photos)
        self.by_id: dict[str, Photo] = {p.id: p for p in photos}
        self.deleted: set[str] = set(deleted)

    def get(self, photo_id: str) -> Photo | None:
        return self.by_id.get(str(photo_id))

    def snapshot(self) -> list[Photo]:
        with self._lock:
            return list(self.photos)

    def is_deleted(self, photo_id: str) -> bool:
        return str(photo_id) in self.deleted

    def delete(self, photo_id: str) -> None:
        if str(photo_id) not in self.by_id:
            raise KeyError(f"unknown photo id; received {photo_id!r}")
        with self._lock:
            self.deleted.add(str(photo_id))

    def add_new(self, topic: str, words: list[str], tags: list[str], count: int) -> list[Photo]:
        """Upload ``count`` new photos (newest of all) matching ``words`` and ``tags``; newest first."""
        added = []
        with self._lock:
            rng = random.Random(f"drift-{self.seed}-{len(self.photos)}")
            last = self.photos[-1] if self.photos else None
            pid, stamp = (int(last.id), last.date_upload) if last else (2_000_000_000, END_TS)
            for i in range(count):
                pid += rng.randint(1, 400_000)
                photo = _make(rng, self.owners, str(pid), topic, len(self.photos), stamp + 60 * (i + 1), False)
                title = " ".join([*words, "new upload", str(pid)])
                photo = _index(dataclasses.replace(photo, title=title, tags=(*photo.tags, *tags), searchable={}))
                self.photos.append(photo)
                self.by_id[photo.id] = photo
                added.append(photo)
        return added[::-1]


def _mysql_time(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def resolve_counts(topics, photos_per_topic) -> dict[str, int]:
    """topics: names or {name: count}; photos_per_topic: int for all, or {name: count}."""
    if isinstance(topics, dict):
        return {str(k): int(v) for k, v in topics.items()}
    names = list(topics) if topics is not None else list(DEFAULT_COUNTS)
    if isinstance(photos_per_topic, int):
        if photos_per_topic < 0:
            raise ValueError(f"photos_per_topic must be >= 0; received {photos_per_topic}")
        return dict.fromkeys(names, photos_per_topic)
    table = {**DEFAULT_COUNTS, **(photos_per_topic or {})}
    return {name: int(table.get(name, FALLBACK_COUNT)) for name in names}
