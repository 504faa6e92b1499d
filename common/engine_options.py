"""Which engine options a lease may carry: one allow-list per engine.

Both engines can be told to run programs, evaluate Python, read local files or write
anywhere through their options (post-processors, exec hooks, ``\\f`` templates, filters,
cookie files, output paths, proxies). A site definition legitimately needs little:
instance roots, formats, sleep and retry settings, a plain filename template. That
is what passes here; anything else refuses the whole site. Nodes enforce it on every
lease (``client.trust``); the coordinator checks ``SITES`` with it at start-up, so an
operator learns at once instead of from failed tasks.
"""

from __future__ import annotations

import functools
import math
import re
import string
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from .sites import ENGINES, FETCHED_SCHEMES, SITE_NAME_RULE, is_site_name


class Refused(Exception):
    """The coordinator asked for something this node does not do; the message says what."""


Check = Callable[[str, Any], None]


# ------------------------------------------------------------------ value checks


def _number(low: float, high: float, *, integer: bool = False) -> Check:
    def check(where: str, value: Any) -> None:
        kinds = int if integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise Refused(f"{where}: must be {'an integer' if integer else 'a number'} from {low} to {high}")
        if not low <= value <= high:
            raise Refused(f"{where}: must be from {low} to {high}, got {value!r}")

    return check


def _integer(low: int, high: int) -> Check:
    return _number(low, high, integer=True)


def _seconds_or_range(low: float, high: float) -> Check:
    """gallery-dl's sleep values: a number or ``[min, max]`` (its string forms are refused)."""
    one = _number(low, high)

    def check(where: str, value: Any) -> None:
        if isinstance(value, list) and len(value) == 2:
            for position, part in enumerate(value):
                one(f"{where}[{position}]", part)
            return
        one(where, value)

    return check


def _boolean(where: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise Refused(f"{where}: must be true or false")


def _text(pattern: str, max_length: int, describe: str) -> Check:
    compiled = re.compile(pattern)

    def check(where: str, value: Any) -> None:
        if not isinstance(value, str) or len(value) > max_length or not compiled.fullmatch(value):
            raise Refused(f"{where}: must be {describe} (at most {max_length} characters)")

    return check


def _one_of(*choices: str) -> Check:
    def check(where: str, value: Any) -> None:
        if value not in choices:
            raise Refused(f"{where}: must be one of {', '.join(choices)}")

    return check


def _list_of(item: Check, max_items: int) -> Check:
    def check(where: str, value: Any) -> None:
        if not isinstance(value, list) or len(value) > max_items:
            raise Refused(f"{where}: must be a list of at most {max_items} entries")
        for position, entry in enumerate(value):
            item(f"{where}[{position}]", entry)

    return check


def _http_root(where: str, value: Any) -> None:
    """An instance root: ``http(s)://host[:port][/path]``, no credentials, query or fragment."""
    if not isinstance(value, str) or len(value) > 300:
        raise Refused(f"{where}: must be an http(s) URL")
    parts = urllib.parse.urlsplit(value)
    if (
        parts.scheme not in FETCHED_SCHEMES
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or not re.fullmatch(r"[A-Za-z0-9._~/-]*", parts.path)
    ):
        raise Refused(f"{where}: must be http(s)://host[:port][/path] without credentials, query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Refused(f"{where}: has a malformed port") from None


_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
_FORMAT_SPEC = re.compile(r"[<>=^]?[0-9]{0,3}(\.[0-9]{1,3})?[sd]?")


def _filename_template(where: str, value: Any) -> None:
    """A gallery-dl filename: plain ``{field}`` / ``{field:spec}`` / ``{field!l}`` only.

    A leading ``\\f`` selects a formatter that evaluates Python or reads files; ``_env``
    reads the environment; ``.attr`` and ``[key]`` reach into live objects; a ``/``
    would leave the folder. None of these pass.
    """
    if not isinstance(value, str) or not value or len(value) > 200:
        raise Refused(f"{where}: must be a filename template string of at most 200 characters")
    if value.startswith("\f") or any(char in value for char in "/\\\x00"):
        raise Refused(f"{where}: must be a plain template (no formatter prefix, no path separators)")
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as error:
        raise Refused(f"{where}: is not a valid template: {error}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not _FIELD_NAME.fullmatch(field):
            raise Refused(f"{where}: field {{{field}}} is not allowed: only plain lowercase field names")
        if conversion not in (None, "l", "u", "c", "C", "t", "s"):
            raise Refused(f"{where}: conversion !{conversion} is not allowed")
        if spec and not _FORMAT_SPEC.fullmatch(spec):
            raise Refused(f"{where}: format spec {spec!r} is not allowed")


def _user_agent(where: str, value: Any) -> None:
    # gallery-dl treats "@PROGRAM" and "browser" as orders to launch a program.
    if not isinstance(value, str) or not value.isprintable() or not 1 <= len(value) <= 256:
        raise Refused(f"{where}: must be printable text of 1 to 256 characters")
    if value.startswith("@") or value.strip().lower() == "browser":
        raise Refused(f"{where}: '@program' and 'browser' launch programs; give a plain user agent")


_RANGE = _text(r"(\d+(-\d*)?|-\d+)(,(\d+(-\d*)?|-\d+))*", 100, "a range like 1-10,15")


# ------------------------------------------------------------------ gallery-dl

#: Engines whose site instances a coordinator may declare (``extractor.<engine>.<instance>``).
GALLERY_DL_INSTANCE_ENGINES = frozenset(
    {
        "danbooru",
        "gelbooru_v01",
        "gelbooru_v02",
        "mastodon",
        "misskey",
        "moebooru",
        "philomena",
        "shimmie2",
        "szurubooru",
    }
)
GALLERY_DL_INSTANCE_KEYS: dict[str, Check] = {"root": _http_root, "root-api": _http_root}
#: Per-category options a site may set. Everything else (post-processors, filters,
#: ``directory``, ``base-directory``, ``archive*``, ``cookies*``, ``netrc``, ``proxy``,
#: ``path-*``, credentials, ...) is the node's own business.
GALLERY_DL_OPTIONS: dict[str, Check] = {
    "sleep": _seconds_or_range(0, 60),
    "sleep-request": _seconds_or_range(0, 60),
    "sleep-extractor": _seconds_or_range(0, 60),
    "sleep-retries": _seconds_or_range(0, 60),
    "retries": _integer(0, 10),
    "timeout": _number(1, 120),
    "image-range": _RANGE,
    "chapter-range": _RANGE,
    "post-range": _RANGE,
    "file-range": _RANGE,
    "user-agent": _user_agent,
    "referer": _boolean,
    "filename": _filename_template,
    "videos": _boolean,
    "tags": _boolean,
    "notes": _boolean,
    "pools": _boolean,
    "metadata": _boolean,
    "comments": _boolean,
}
_INSTANCE_NAME = re.compile(r"[a-z][a-z0-9]{1,30}")


@functools.cache
def gallery_dl_categories() -> frozenset[str]:
    """Every category and engine name gallery-dl knows: an instance may not take one, or
    the operator's credentials for that site would go to the coordinator's root."""
    from gallery_dl import extractor

    names: set[str] = set()
    for cls in extractor.extractors():
        names.add(cls.category)
        names.add(getattr(cls, "basecategory", "") or cls.category)
    return frozenset(name for name in names if name)


def vet_gallery_dl(
    options: Mapping[str, Any], where: str = "options", categories: frozenset[str] | None = None
) -> dict[str, Any]:
    """``{"extractor": {<engine>: {<instance>: {"root": URL}}, <category>: {OPTS}}}`` and nothing else.

    ``categories``: gallery-dl's own (``gallery_dl_categories()``) to check names against;
    None skips that check (the coordinator, which does not load every extractor).
    """
    unknown = sorted(set(options) - {"extractor"})
    if unknown:
        raise Refused(f"{where}.{unknown[0]}: not allowed; a site's gallery-dl options live under 'extractor'")
    extractor_options = options.get("extractor", {})
    if not isinstance(extractor_options, Mapping):
        raise Refused(f"{where}.extractor: must be a mapping")
    declared: set[str] = set()
    for name, value in extractor_options.items():
        here = f"{where}.extractor.{name}"
        if not isinstance(value, Mapping):
            raise Refused(f"{here}: not allowed; only per-category option mappings are accepted")
        for key, entry in value.items():
            if isinstance(entry, Mapping) and name in GALLERY_DL_INSTANCE_ENGINES:
                _vet_instance(f"{here}.{key}", key, entry, categories)
                declared.add(key)
    for name, value in extractor_options.items():
        here = f"{where}.extractor.{name}"
        known = name in GALLERY_DL_INSTANCE_ENGINES or name in declared or categories is None or name in categories
        if not known:
            raise Refused(f"{here}: gallery-dl has no category {name!r} and no instance of that name is declared")
        for key, entry in value.items():
            if isinstance(entry, Mapping) and name in GALLERY_DL_INSTANCE_ENGINES:
                continue
            check = GALLERY_DL_OPTIONS.get(key)
            if check is None:
                raise Refused(f"{here}.{key}: not an option a coordinator may set on this node")
            check(f"{here}.{key}", entry)
    return {"extractor": {name: dict(value) for name, value in extractor_options.items()}}


def _vet_instance(where: str, name: str, entry: Mapping[str, Any], categories: frozenset[str] | None) -> None:
    if not _INSTANCE_NAME.fullmatch(name):
        raise Refused(f"{where}: an instance name is 2-31 of a-z 0-9 starting with a letter")
    if categories is not None and name in categories:
        raise Refused(f"{where}: {name!r} is one of gallery-dl's own categories; pick another instance name")
    if "root" not in entry:
        raise Refused(f"{where}: an instance needs a 'root'")
    for key, value in entry.items():
        check = GALLERY_DL_INSTANCE_KEYS.get(key)
        if check is None:
            raise Refused(f"{where}.{key}: not allowed in an instance (only {', '.join(GALLERY_DL_INSTANCE_KEYS)})")
        check(f"{where}.{key}", value)


# ---------------------------------------------------------------------- yt-dlp


def _match_filter(where: str, value: Any) -> None:
    """yt-dlp's ``--match-filters``: parsed, not evaluated; no regex (``~=``) and no
    interactive ``-``, and short."""
    _list_of(_text(r"[^\x00-\x1f]+", 200, "a filter expression"), 10)(where, value)
    for position, entry in enumerate(value):
        if entry.strip() == "-" or "~=" in entry:
            raise Refused(f"{where}[{position}]: '-' (interactive) and '~=' (regular expressions) are not allowed")


YT_DLP_OPTIONS: dict[str, Check] = {
    "format": _text(r"[A-Za-z0-9_+/,.:<>=!*?()\[\]^$ -]+", 200, "a yt-dlp format selector"),
    "format_sort": _list_of(_text(r"[+]?[a-z_]+(:[\w.]+)?", 40, "a sort field like res:720"), 20),
    "format_sort_force": _boolean,
    "prefer_free_formats": _boolean,
    "noplaylist": _boolean,
    "merge_output_format": _one_of("avi", "flv", "mkv", "mov", "mp4", "webm"),
    "max_filesize": _integer(0, 2**53),
    "min_filesize": _integer(0, 2**53),
    "retries": _integer(0, 10),
    "fragment_retries": _integer(0, 10),
    "extractor_retries": _integer(0, 10),
    "file_access_retries": _integer(0, 10),
    "ratelimit": _integer(1, 2**53),
    "throttledratelimit": _integer(1, 2**53),
    "sleep_interval": _number(0, 60),
    "max_sleep_interval": _number(0, 60),
    "sleep_interval_requests": _number(0, 60),
    "socket_timeout": _number(1, 120),
    "concurrent_fragment_downloads": _integer(1, 4),
    "playlist_items": _text(r"\d+(-\d+)?(,\d+(-\d+)?)*", 100, "items like 1-10,15"),
    "playlistend": _integer(1, 1_000_000),
    "age_limit": _integer(0, 100),
    "min_views": _integer(0, 2**53),
    "max_views": _integer(0, 2**53),
    "match_filter": _match_filter,
}


def vet_yt_dlp(options: Mapping[str, Any], where: str = "options", categories: object = None) -> dict[str, Any]:
    for key, value in options.items():
        check = YT_DLP_OPTIONS.get(key)
        if check is None:
            raise Refused(f"{where}.{key}: not an option a coordinator may set on this node")
        check(f"{where}.{key}", value)
    return dict(options)


_VETTERS = {"gallery-dl": vet_gallery_dl, "yt-dlp": vet_yt_dlp}


# ----------------------------------------------------------------------- sites


def vet_site(name: Any, info: Any, *, check_categories: bool = True) -> dict[str, Any]:
    """A site as the coordinator describes it, checked: ``{"engine", "options"}``."""
    if not is_site_name(name):
        raise Refused(f"site name {name!r} is not allowed: {SITE_NAME_RULE}")
    if not isinstance(info, Mapping):
        raise Refused(f"site {name!r}: its description must be a mapping")
    engine = info.get("engine")
    if engine not in ENGINES:
        raise Refused(f"site {name!r}: this node runs no engine {engine!r} (it knows {', '.join(ENGINES)})")
    options = info.get("options") or {}
    if not isinstance(options, Mapping):
        raise Refused(f"site {name!r}: options must be a mapping")
    categories = gallery_dl_categories() if check_categories and engine == "gallery-dl" else None
    _VETTERS[engine](options, categories=categories)  # raises Refused
    return {"engine": engine, "options": dict(options)}
