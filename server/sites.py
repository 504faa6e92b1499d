"""Sites the coordinator hands out work for, declared in config (``SITES``).

The coordinator is the source of truth for sites: it turns an inventory item into the
concrete URL a node resolves, and a found post into the URL a node downloads, so a
node needs only its own credentials.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.engine_options import Refused, vet_site
from common.settings import ConfigError
from common.sites import ENGINES, SITE_NAME_RULE, is_site_name
from common.video import CHOICE_SETTINGS, BadChoice, VideoChoice

from .schedule import parse_interval

#: The hashes boorus publish per post, and the metadata field that carries each.
DEFAULT_HASH_FIELDS = {"md5": "md5", "sha256": "sha256"}
HASH_SHAPES = {"md5": re.compile(r"[0-9a-fA-F]{32}"), "sha256": re.compile(r"[0-9a-fA-F]{64}")}
#: A gallery-dl archive entry is its extractor's category and ``archive_fmt`` filled in
#: (``{id}``, ``t_{search_tags}_{id}``, ``p_{pool}_{id}`` for boorus): the post id is the
#: trailing digits.
DEFAULT_ARCHIVE_ID_PATTERN = re.compile(r"(?P<id>[0-9]+)$")
SETTINGS = {
    "engine",
    "search_url",
    "url_patterns",
    "post_url",
    "max_in_flight",
    "options",
    "skip_known_hashes",
    "archive_id_pattern",
    "check_every",
    "test",
    *CHOICE_SETTINGS,  # yt-dlp sites: what each video download asks for (``common.video``)
}
#: Engine options that are the same ideas as the video settings: a site says them once.
VIDEO_OPTIONS = {"format": "format", "merge_output_format": "merge_output_format", "max_filesize": "max_filesize_bytes"}
#: What a site's ``test`` may say.
TEST_SETTINGS = {"url", "query", "min_posts", "sha256", "metadata_keys", "download"}


@dataclass(frozen=True)
class Site:
    name: str
    engine: str
    #: ``str.format`` template with ``{query}`` (URL-quoted) for ``query`` items; None: no search.
    search_url: str | None = None
    #: Regular expressions a ``url`` item must match to belong to this site.
    url_patterns: tuple[re.Pattern[str], ...] = ()
    #: Template turning a found post's metadata into its download URL (e.g. ``.../post/show/{id}``);
    #: None: the client reports the URL to download itself.
    post_url: str | None = None
    #: Download tasks of this site in flight across all clients; None: no limit.
    max_in_flight: int | None = None
    #: Non-secret engine options sent to every node with a lease (e.g. a gallery-dl instance root).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Content hashes a found post's metadata publishes (hash kind -> metadata field): a post
    #: whose hash the archive holds is not fetched (``skip_known_hashes``; empty: off).
    hash_fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HASH_FIELDS))
    #: How an entry of a gallery-dl download archive names a post: the group ``id``.
    archive_id_pattern: re.Pattern[str] = DEFAULT_ARCHIVE_ID_PATTERN
    #: Seconds between checks of this site's items that name no interval (None: the global one).
    check_every: int | None = None
    #: A health test (``python -m client test-site``): what to resolve and what it must yield.
    test: Mapping[str, Any] | None = None
    #: yt-dlp sites: the format, container and limits of its videos (an item may override them).
    video: VideoChoice = field(default_factory=VideoChoice)

    def search_url_for(self, query: str) -> str:
        assert self.search_url is not None
        return self.search_url.format(query=urllib.parse.quote(query, safe=""))

    def download_url_for(self, remote_id: str, metadata: Mapping[str, Any], reported_url: str | None) -> str | None:
        """The post URL from ``post_url`` when it formats with this post's metadata, else the reported one."""
        if self.post_url is not None:
            try:
                return self.post_url.format_map({**metadata, "remote_id": remote_id})
            except (KeyError, IndexError, ValueError, AttributeError):
                pass
        return reported_url

    def published_hashes(self, metadata: Mapping[str, Any]) -> dict[str, str]:
        """The content hashes this post's metadata carries, lowercased; malformed ones are ignored."""
        hashes = {}
        for kind, name in self.hash_fields.items():
            value = metadata.get(name)
            if isinstance(value, str) and HASH_SHAPES[kind].fullmatch(value):
                hashes[kind] = value.lower()
        return hashes

    def matches(self, url: str) -> bool:
        return any(pattern.search(url) for pattern in self.url_patterns)

    def describe(self) -> dict[str, Any]:
        """What a node needs to know about the site, sent once per lease."""
        return {"engine": self.engine, "options": dict(self.options)}


class SiteRegistry:
    """The configured sites, looked up by name or by URL."""

    def __init__(self, sites: Iterable[Site] = ()):
        self._by_name = {site.name: site for site in sites}

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Site | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def for_url(self, url: str) -> Site | None:
        """The first site (in config order) whose patterns match ``url``."""
        for site in self._by_name.values():
            if site.matches(url):
                return site
        return None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SiteRegistry:
        if not isinstance(config, Mapping):
            raise ConfigError("SITES must be a mapping of site name to its settings")
        return cls(_parse_site(name, spec) for name, spec in config.items())


def _parse_site(name: Any, spec: Any) -> Site:
    where = f"SITES[{name!r}]"
    if not is_site_name(name):
        raise ConfigError(f"{where}: a site name is {SITE_NAME_RULE}")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(spec) - SETTINGS
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    engine = spec.get("engine")
    if engine not in ENGINES:
        raise ConfigError(f"{where}.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    search_url = spec.get("search_url")
    if search_url is not None and (not isinstance(search_url, str) or "{query}" not in search_url):
        raise ConfigError(f"{where}.search_url must be a string containing {{query}}")
    patterns = spec.get("url_patterns", [])
    if isinstance(patterns, str) or not isinstance(patterns, list | tuple):
        raise ConfigError(f"{where}.url_patterns must be a list of regular expressions")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as exc:
            raise ConfigError(f"{where}.url_patterns: {pattern!r} is not a regular expression: {exc}") from None
    post_url = spec.get("post_url")
    if post_url is not None and not isinstance(post_url, str):
        raise ConfigError(f"{where}.post_url must be a string template")
    limit = spec.get("max_in_flight")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{where}.max_in_flight must be a positive integer or None")
    options = spec.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.options must be a mapping")
    try:  # the same allow-list every node applies: better to hear it now than from failed tasks
        # (all but the names of gallery-dl's own categories: knowing them means loading
        # every extractor, ~20 MB in each coordinator process; the nodes check those)
        vet_site(name, {"engine": engine, "options": options}, check_categories=False)
    except Refused as refusal:
        raise ConfigError(f"{where}: nodes would refuse this site: {refusal}") from None
    return Site(
        name,
        engine,
        search_url,
        tuple(compiled),
        post_url,
        limit,
        dict(options),
        _hash_fields(where, spec.get("skip_known_hashes", True)),
        _archive_id_pattern(where, spec.get("archive_id_pattern")),
        _check_every(where, spec.get("check_every")),
        _test(where, spec.get("test"), search_url),
        _video(where, engine, spec, options),
    )


def _video(where: str, engine: str, spec: Mapping[str, Any], options: Mapping[str, Any]) -> VideoChoice:
    given = {name: spec[name] for name in CHOICE_SETTINGS if name in spec}
    if given and engine != "yt-dlp":
        raise ConfigError(f"{where}: {', '.join(given)} apply to yt-dlp sites only")
    twice = [f"options.{option}" for option, setting in VIDEO_OPTIONS.items() if option in options and setting in given]
    if twice:
        raise ConfigError(f"{where}: {twice[0]} and the site's own setting say the same thing; keep one")
    try:
        return VideoChoice.parse(given)
    except BadChoice as problem:
        raise ConfigError(f"{where}: {problem}") from None


def _test(where: str, spec: Any, search_url: str | None) -> dict[str, Any] | None:
    """A site test: ``url`` or ``query`` (formatted with the site's search_url), and what it
    must yield: ``min_posts`` posts (default 1), files with these ``sha256`` among the
    first ``download`` posts (default 1), ``metadata_keys`` in every found post."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) - TEST_SETTINGS:
        raise ConfigError(f"{where}.test must be a mapping of {', '.join(sorted(TEST_SETTINGS))}")
    if ("url" in spec) == ("query" in spec):
        raise ConfigError(f"{where}.test names a url or a query (one of them)")
    if "query" in spec:
        if search_url is None:
            raise ConfigError(f"{where}.test has a query but the site has no search_url")
        url = search_url.format(query=urllib.parse.quote(str(spec["query"]), safe=""))
    else:
        url = spec["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.test.url must be an http(s) URL")
    sha256 = spec.get("sha256", [])
    keys = spec.get("metadata_keys", [])
    if not isinstance(sha256, list) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in sha256):
        raise ConfigError(f"{where}.test.sha256 must be a list of lowercase sha256 digests")
    if not isinstance(keys, list) or not all(isinstance(v, str) and v for v in keys):
        raise ConfigError(f"{where}.test.metadata_keys must be a list of names")
    counts = {}
    for name, default in (("min_posts", 1), ("download", max(1, len(sha256)))):
        value = spec.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
            raise ConfigError(f"{where}.test.{name} must be an integer from 0 to 1000")
        counts[name] = value
    return {"url": url, "sha256": list(sha256), "metadata_keys": list(keys), **counts}


def _check_every(where: str, setting: Any) -> int | None:
    try:
        return parse_interval(setting)
    except ValueError as problem:
        raise ConfigError(f"{where}.check_every {problem}") from None


def _hash_fields(where: str, setting: Any) -> dict[str, str]:
    """``skip_known_hashes``: True (md5 and sha256 fields of those names), False, or a
    mapping of hash kind (md5, sha256) to the metadata field that carries it."""
    if setting is True:
        return dict(DEFAULT_HASH_FIELDS)
    if setting is False or setting is None:
        return {}
    if not isinstance(setting, Mapping) or not setting:
        raise ConfigError(f"{where}.skip_known_hashes must be true, false or a mapping like {DEFAULT_HASH_FIELDS}")
    for kind, name in setting.items():
        if kind not in HASH_SHAPES or not isinstance(name, str) or not name:
            raise ConfigError(
                f"{where}.skip_known_hashes: {kind!r} -> {name!r}: keys are {', '.join(HASH_SHAPES)}, "
                "values the metadata field that carries that hash"
            )
    return dict(setting)


def _archive_id_pattern(where: str, setting: Any) -> re.Pattern[str]:
    if setting is None:
        return DEFAULT_ARCHIVE_ID_PATTERN
    try:
        pattern = re.compile(setting)
    except (re.error, TypeError) as exc:
        raise ConfigError(f"{where}.archive_id_pattern: {setting!r} is not a regular expression: {exc}") from None
    if "id" not in pattern.groupindex:
        example = DEFAULT_ARCHIVE_ID_PATTERN.pattern
        raise ConfigError(f"{where}.archive_id_pattern needs a group named id, e.g. {example}")
    return pattern
