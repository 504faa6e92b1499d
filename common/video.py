"""What a video download asks for: the format (a yt-dlp format selector, or a preset a
user can remember), the container streams are merged into, and the limits a video must
stay within. A site sets them (``SITES``), an inventory row may override them (columns
``format``, ``max_duration_seconds``, ``max_filesize_bytes``), and each download lease
carries the result (``VideoOrder``); the coordinator checks them when it loads its sites
and imports a row, a node again before it runs yt-dlp.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NotRequired, TypedDict

#: Named formats: best at or below a height always keeps the sound (a video-only stream
#: merged with the best audio, or a muxed file); ``audio`` extracts the sound when a site
#: serves no audio-only stream; ``video-only`` needs a site that serves video apart.
PRESETS = {
    "best": "bv*+ba/b",
    "1080p": "bv*[height<=1080]+ba/b[height<=1080]",
    "720p": "bv*[height<=720]+ba/b[height<=720]",
    "480p": "bv*[height<=480]+ba/b[height<=480]",
    "audio": "ba/b",
    "video-only": "bv",
}
#: The preset whose files are audio alone (yt-dlp's FFmpegExtractAudio, no re-encoding).
AUDIO_PRESET = "audio"
CONTAINERS = ("mp4", "mkv", "webm")
#: The characters a format selector is made of (``common.engine_options`` vets the same).
SELECTOR = re.compile(r"[A-Za-z0-9_+/,.:<>=!*?()\[\]^$ -]{1,200}")
#: A bare word of letters (or a size like ``360p``, ``4k``) names a preset: one that is not a
#: preset, a yt-dlp keyword or a media extension is a typo, not a site's format id
#: (a letters-only format id is picked with ``[format_id=hd]``).
PRESET_LIKE = re.compile(r"[a-z]+(-[a-z]+)*|[0-9]+[pk][0-9]*")
YT_DLP_WORDS = frozenset(
    {
        *("b", "w", "bv", "ba", "wv", "wa", "best", "worst", "bestvideo", "bestaudio", "worstvideo", "worstaudio"),
        *("all", "mergeall", "mp4", "webm", "m4a", "mp3", "ogg", "opus", "flv", "3gp", "mkv", "mov", "aac", "flac"),
    }
)
#: What a choice is made of: a yt-dlp site's settings in ``SITES`` and an item's own
#: inventory columns go by these names.
CHOICE_SETTINGS = ("format", "merge_output_format", "max_duration_seconds", "max_filesize_bytes")
MAX_LIMIT = 2**53


class VideoOrder(TypedDict):
    """A download lease's video order (yt-dlp sites): ``format`` is the selector itself;
    without it the node's own ``YT_DLP_OPTIONS`` (or yt-dlp's default, ``best``) choose."""

    format: NotRequired[str]
    #: The preset it came from, when it came from one (``audio`` changes what is kept).
    preset: NotRequired[str]
    merge_output_format: NotRequired[str]
    max_duration_seconds: NotRequired[int]
    max_filesize_bytes: NotRequired[int]


class BadChoice(ValueError):
    """A format, container or limit that cannot be used; the message names it."""


@dataclass(frozen=True)
class VideoChoice:
    """A site's (or an item's) format, container and limits; None: not set here."""

    format: str | None = None
    merge_output_format: str | None = None
    max_duration_seconds: int | None = None
    max_filesize_bytes: int | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> VideoChoice:
        """From settings or CSV text; raises BadChoice naming the field."""
        return cls(
            format=check_format(values.get("format")),
            merge_output_format=_container(values.get("merge_output_format")),
            max_duration_seconds=_limit("max_duration_seconds", values.get("max_duration_seconds")),
            max_filesize_bytes=_limit("max_filesize_bytes", values.get("max_filesize_bytes")),
        )

    def overridden_by(self, other: VideoChoice) -> VideoChoice:
        """This choice with what ``other`` sets taking its place."""
        changes = {name: value for name, value in vars(other).items() if value is not None}
        return replace(self, **changes) if changes else self

    def as_order(self) -> VideoOrder:
        """The lease's shape (empty: nothing asked)."""
        order: VideoOrder = {}
        if self.format is not None:
            order["format"] = PRESETS.get(self.format, self.format)
            if self.format in PRESETS:
                order["preset"] = self.format
        if self.merge_output_format:
            order["merge_output_format"] = self.merge_output_format
        if self.max_duration_seconds is not None:
            order["max_duration_seconds"] = self.max_duration_seconds
        if self.max_filesize_bytes is not None:
            order["max_filesize_bytes"] = self.max_filesize_bytes
        return order


def check_format(value: Any) -> str | None:
    """A preset name, or a format selector yt-dlp can parse; None/empty: not set."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadChoice(f"format must be text, got {type(value).__name__}")
    value = value.strip()
    if value in PRESETS:
        return value
    if PRESET_LIKE.fullmatch(value) and value not in YT_DLP_WORDS:
        raise BadChoice(f"format {value!r} is not a preset; the presets are {', '.join(PRESETS)}")
    if not SELECTOR.fullmatch(value):
        raise BadChoice(
            f"format {value!r} is neither a preset ({', '.join(PRESETS)}) nor a yt-dlp format selector "
            "(letters, digits and _+/,.:<>=!*?()[]^$ - only)"
        )
    problem = _selector_problem(value)
    if problem:
        raise BadChoice(f"format {value!r} is not a valid yt-dlp format selector: {problem}")
    return value


@functools.lru_cache(maxsize=256)
def _selector_problem(selector: str) -> str | None:
    """yt-dlp's own parser decides (one import, on first use)."""
    import yt_dlp

    with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, "logger": _Silent()}) as ydl:
        try:
            ydl.build_format_selector(selector)
        except (SyntaxError, ValueError) as error:
            return str(error).splitlines()[0][:200] or error.__class__.__name__
    return None


class _Silent:
    def debug(self, message: str) -> None: ...

    warning = error = info = debug


def _container(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in CONTAINERS:
        raise BadChoice(f"merge_output_format must be one of {', '.join(CONTAINERS)}, got {value!r}")
    return value


def _limit(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BadChoice(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise BadChoice(f"{name} must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def over_limit(order: Mapping[str, Any] | None, *, duration: Any = None, filesize: Any = None) -> str | None:
    """Why a video with this duration (seconds) / size (bytes) may not be fetched, or None."""
    if not order:
        return None
    most = order.get("max_duration_seconds")
    if most and isinstance(duration, int | float) and duration > most:
        return f"over limit: {duration:.0f} s > {most} s"
    most = order.get("max_filesize_bytes")
    if most and isinstance(filesize, int | float) and filesize > most:
        return f"over limit: {filesize:.0f} bytes > {most} bytes"
    return None


def check_order(order: Any) -> VideoOrder:
    """A lease's video order as a node takes it: only these keys, each checked (the
    selector by yt-dlp's parser); raises BadChoice."""
    if not isinstance(order, Mapping):
        raise BadChoice("video: must be a mapping")
    unknown = sorted(set(order) - set(VideoOrder.__annotations__))
    if unknown:
        raise BadChoice(f"video.{unknown[0]}: not something a lease may ask")
    selector = order.get("format")
    if "format" in order and (
        not isinstance(selector, str) or not SELECTOR.fullmatch(selector) or _selector_problem(selector)
    ):
        raise BadChoice(f"video.format: {selector!r} is not a yt-dlp format selector")
    preset = order.get("preset")
    if preset is not None and PRESETS.get(preset) != selector:
        raise BadChoice(f"video.preset: {preset!r} does not name this format")
    _container(order.get("merge_output_format"))
    for name in ("max_duration_seconds", "max_filesize_bytes"):
        if name in order and (isinstance(order[name], str) or _limit(name, order[name]) is None):
            raise BadChoice(f"video.{name}: must be a whole number, got {order[name]!r}")
    return dict(order)  # type: ignore[return-value]
