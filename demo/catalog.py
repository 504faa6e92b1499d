"""The demo site's content: deterministic posts, images and videos, so tests can recompute
exactly what the site serves (same ids, same bytes, same hashes) without asking it.

Posts 1..N carry ordinary tags (``all``, ``landscape``/``portrait``, ``artist_K``,
``color_X``, ``big``, ``dupes``). Every tenth post is a near-duplicate (resized and
recompressed JPEG) of the post before it, so perceptual hashes have something to find.
Special posts from 9001 reproduce failures by tag; see FAILURES.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

MEDIA = Path(__file__).parent / "media"
COLORS = ("red", "green", "blue", "amber", "violet")
POSTS_PER_ARTIST = 30
CREATED_AT = 1_700_000_000


@dataclass(frozen=True)
class Failure:
    tag: str
    #: what the file URL does: "404", "500", "429", "drop", "slow"
    mode: str
    #: how many requests fail before the file is served normally (None: always)
    times: int | None


#: Special posts and the failure each reproduces on its file URL.
FAILURES = {
    9001: Failure("gone", "404", None),
    # More failures than a job's own tries (gallery-dl: 1 + 2 retries): the task fails
    # once, goes back to the queue with backoff, and succeeds on its next lease.
    9002: Failure("flaky", "500", 3),
    9003: Failure("throttled", "429", 1),
    9004: Failure("dropped", "drop", 3),
    9005: Failure("slow", "slow", None),
    9006: Failure("broken", "500", None),
}
#: Search tags whose API answer fails first: tag -> (status, times)
API_FAILURES = {"api_flaky": ("500", 1), "api_throttled": ("429", 1)}
RETRY_AFTER_SECONDS = 2

VIDEOS = {
    "clip1": ("Red clip", "mp4", ("all", "red")),
    "clip2": ("Green clip", "mp4", ("all", "green")),
    "clip3": ("Blue clip", "mp4", ("all", "blue")),
    "clip4": ("Amber clip", "webm", ("all", "amber")),
    "clip5": ("Teal clip", "webm", ("all", "teal")),
}


@dataclass(frozen=True)
class Post:
    id: int
    tags: tuple[str, ...]
    ext: str
    width: int
    height: int

    @property
    def file_name(self) -> str:
        return f"{self.id}.{self.ext}"


#: The ``growing`` tag: posts from GROWING_FIRST on, of which ``Catalog.grown`` have
#: appeared so far (newest first, as any tag search), for subscription tests.
GROWING_FIRST = 5001
GROWING_MAX = 2000
GROWING_AT_START = 130


class Catalog:
    def __init__(self, posts: int = 240, image_size: int | None = None):
        self.count = posts
        #: Fixed edge length for every image (benchmarks want uniform files); None: varied.
        self.image_size = image_size
        #: How many ``growing`` posts exist now (``POST /_grow`` adds some).
        self.grown = GROWING_AT_START
        #: Posts deleted upstream (``POST /_vanish``): in no search, their pages and files 404.
        self.vanished: set[int] = set()

    def post(self, post_id: int) -> Post | None:
        if post_id in self.vanished:
            return None
        if post_id in FAILURES:
            return Post(post_id, ("all", "failures", FAILURES[post_id].tag), "png", 128, 128)
        if GROWING_FIRST <= post_id < GROWING_FIRST + min(self.grown, GROWING_MAX):
            return Post(post_id, ("growing",), "png", 192, 160)
        if not 1 <= post_id <= self.count:
            return None
        rng = random.Random(post_id)
        big = post_id % 40 == 0
        duplicate = post_id % 10 == 2
        if self.image_size:
            width = height = self.image_size
        elif big:
            width = height = 2048
        else:
            width, height = rng.randrange(256, 641, 32), rng.randrange(256, 641, 32)
        tags = [
            "all",
            "landscape" if width >= height else "portrait",
            f"artist_{(post_id - 1) // POSTS_PER_ARTIST + 1}",
            f"color_{COLORS[post_id % len(COLORS)]}",
        ]
        if big:
            tags.append("big")
        if post_id % 10 in (1, 2):
            tags.append("dupes")
        ext = "jpg" if big or duplicate or post_id % 3 else "png"
        return Post(post_id, tuple(tags), ext, width, height)

    def search(self, tags: list[str]) -> list[Post]:
        """Posts carrying every tag, newest first (as boorus list them). ``id:N`` picks one post."""
        if len(tags) == 1 and tags[0].startswith("id:"):
            try:
                post = self.post(int(tags[0][3:]))
            except ValueError:
                return []
            return [post] if post else []
        wanted = [tag for tag in tags if tag]
        if "growing" in wanted:
            newest = GROWING_FIRST + min(self.grown, GROWING_MAX) - 1
            candidates = [self.post(n) for n in range(newest, GROWING_FIRST - 1, -1)]
        else:
            candidates = [self.post(n) for n in range(self.count, 0, -1)] + [self.post(n) for n in sorted(FAILURES)]
        return [post for post in candidates if post is not None and all(tag in post.tags for tag in wanted)]

    def file_bytes(self, post: Post) -> bytes:
        return _render(post.id, post.ext, post.width, post.height, self.image_size)

    def md5(self, post: Post) -> str:
        return hashlib.md5(self.file_bytes(post)).hexdigest()

    def sha256(self, post: Post) -> str:
        return hashlib.sha256(self.file_bytes(post)).hexdigest()

    def as_json(self, post: Post, root: str) -> dict:
        """The post as moebooru's /post.json lists it (``file_url`` may be relative)."""
        return {
            "id": post.id,
            "tags": " ".join(post.tags),
            "created_at": CREATED_AT + post.id * 60,
            "author": f"uploader{post.id % 7}",
            "source": f"https://example.invalid/art/{post.id}",
            "score": post.id % 50,
            "md5": self.md5(post),
            "file_size": len(self.file_bytes(post)),
            "file_ext": post.ext,
            "file_url": f"/data/{post.file_name}",
            "width": post.width,
            "height": post.height,
            "rating": "s",
        }


@functools.lru_cache(maxsize=4096)
def _render(post_id: int, ext: str, width: int, height: int, fixed: int | None) -> bytes:
    """A deterministic picture; a near-duplicate post reuses its predecessor's, resized."""
    if post_id % 10 == 2 and not fixed and post_id not in FAILURES:
        original = Image.open(io.BytesIO(_render(post_id - 1, "png", *_size_of(post_id - 1), None)))
        copy = original.convert("RGB").resize((original.width * 3 // 4, original.height * 3 // 4))
        copy = copy.filter(ImageFilter.GaussianBlur(0.6))
        return _encode(copy, "jpg", quality=70)
    rng = random.Random(post_id * 7919)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    top, bottom = _colour(rng), _colour(rng)
    for y in range(0, height, 4):
        mix = y / max(height - 1, 1)
        draw.rectangle(
            [0, y, width, y + 3], fill=tuple(int(a + (b - a) * mix) for a, b in zip(top, bottom, strict=True))
        )
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(width // 8, width // 2), y0 + rng.randrange(height // 8, height // 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=_colour(rng))
    return _encode(image, ext)


def _size_of(post_id: int) -> tuple[int, int]:
    rng = random.Random(post_id)
    return rng.randrange(256, 641, 32), rng.randrange(256, 641, 32)


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _encode(image: Image.Image, ext: str, quality: int = 88) -> bytes:
    out = io.BytesIO()
    if ext == "png":
        image.save(out, "PNG", optimize=False)
    else:
        image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def video_bytes(name: str) -> bytes:
    return (MEDIA / f"{name}.{VIDEOS[name][1]}").read_bytes()
