"""yt-dlp as a library: list videos without downloading, download and learn the final
paths, and classify ``DownloadError`` causes (HTTP status, unsupported URL, network).

Options are per ``YoutubeDL`` instance, so nothing global is shared between jobs but a
TLS context, one for each distinct setting (``_share_tls_contexts``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.networking import common as networking_common
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, UnsupportedError, match_filter_func

from common.sites import is_fetched_url
from common.states import FailureClass
from common.video import AUDIO_PRESET, BadChoice, VideoOrder, check_order, over_limit

from ..trust import scheme_refusal
from .base import (
    Engine,
    Failure,
    Found,
    Resolution,
    StopAtKnown,
    Written,
    classify_http,
    json_safe,
    node_fault_of,
    within,
)

#: yt-dlp's fallback extractors name videos by page position; their media URL is steadier.
GENERIC_EXTRACTORS = {"Generic", "HTML5MediaEmbed"}
MAX_REMOTE_ID = 255
#: yt-dlp options that print a video's fields (``--get-title`` and the like).
FORCED_PRINTS = (
    "forcetitle",
    "forceid",
    "forceurl",
    "forcethumbnail",
    "forcedescription",
    "forcefilename",
    "forceduration",
    "forceformat",
    "forcejson",
)
METADATA_KEYS = (
    "id",
    "title",
    "description",
    "uploader",
    "uploader_id",
    "channel",
    "upload_date",
    "timestamp",
    "duration",
    "ext",
    "width",
    "height",
    "vcodec",
    "acodec",
    "webpage_url",
    "extractor_key",
    "tags",
    "view_count",
    "like_count",
)


class YtDlpEngine(Engine):
    name = "yt-dlp"

    def _options(self, site: str, **owned: Any) -> dict[str, Any]:
        """Defaults < the site's vetted options < the node's ``YT_DLP_OPTIONS`` < what
        fetchfleet owns (where files go, no local files, no cache, its logger)."""
        site_options = dict((self.sites.get(site) or {}).get("options") or {})
        if "match_filter" in site_options:  # vetted as strings; yt-dlp takes the compiled filter
            site_options["match_filter"] = match_filter_func(site_options["match_filter"])
        options = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "cachedir": False,
            "retries": 2,
            "fragment_retries": 2,
            "socket_timeout": 30,
            **site_options,
            **dict(self.settings.get("YT_DLP_OPTIONS") or {}),
            "enable_file_urls": False,
            **owned,
        }
        options["logger"] = _Messages()
        return options

    def resolve(self, url: str, site: str, stop: StopAtKnown | None = None) -> Resolution:
        # A flat playlist comes in one answer: a re-check has nothing to save by stopping.
        with _ConfinedYoutubeDL(self._options(site, extract_flat="in_playlist", simulate=True)) as ydl:
            info = _run(ydl, url, download=False)
        single = not info.get("entries")
        entries = [entry for entry in (info.get("entries") or [info]) if entry]
        found: dict[str, Found] = {}
        for entry in entries:
            remote_id, download_url = _identity(entry, single)
            if not is_fetched_url(download_url):
                continue  # an ftp: or file: video is never fetched: no task for it
            if remote_id not in found:
                metadata = json_safe({key: entry[key] for key in METADATA_KEYS if entry.get(key) is not None})
                found[remote_id] = Found(remote_id, download_url, metadata)
        return Resolution(list(found.values()))

    def download(
        self, url: str, site: str, directory: Path, partial: Path, task: Mapping[str, Any] | None = None
    ) -> list[Written]:
        order = _order_of(task)
        found = (task or {}).get("metadata") or {}
        # The duration the metadata task saw decides before anything is asked of the site
        # (its size depends on the format this download chooses: that is checked below).
        refusal = over_limit(order, duration=found.get("duration"))
        if refusal:
            raise Failure(FailureClass.PERMANENT, refusal)
        limits = _Limits(order)
        options = self._options(
            site,
            outtmpl={"default": "%(id)s.%(ext)s"},
            paths={"home": str(directory), "temp": str(partial)},
            # a stream missing a segment fails (transient), never a file with a hole in it
            skip_unavailable_fragments=False,
            **_format_options(order),
        )
        options["match_filter"] = limits.wrap(options.get("match_filter"))
        if order and order.get("max_filesize_bytes"):
            # a stream's size is estimated from its manifest's bitrate and the duration too
            # (yt-dlp leaves that out by default: it is the peak, so the estimate is high)
            options["compat_opts"] = {*options.get("compat_opts", ()), "manifest-filesize-approx"}
        with _ConfinedYoutubeDL(options, confined_to=(directory, partial)) as ydl:
            info = _run(ydl, url, download=True)
        if limits.refusal:
            raise Failure(FailureClass.PERMANENT, limits.refusal)
        written = []
        for entry in info.get("entries") or [info]:
            for download in (entry or {}).get("requested_downloads") or []:
                path = Path(download["filepath"])
                if not path.is_file():
                    raise Failure(FailureClass.TRANSIENT, f"yt-dlp reported {path.name} but it is not on disk")
                metadata = json_safe({key: entry[key] for key in METADATA_KEYS if entry.get(key) is not None})
                written.append(Written(path, metadata))
        if not written:
            raise Failure(FailureClass.PERMANENT, f"no video downloaded from {url}")
        limits.check_written(written)
        return written


def _identity(entry: Mapping[str, Any], single: bool = False) -> tuple[str, str]:
    """(remote id, URL to download) of one listed video.

    A site extractor's own id names the video. The generic extractors' ids are page
    positions, so there the full media URL is the identity (hashed when too long):
    two videos of one page never share it, as ``clip.mp4`` and ``clip.webm`` share a stem.
    A page's only video offered as a choice (several formats, or a stream manifest) is
    named and downloaded by its page: the node chooses the format when it downloads.
    """
    media_url = entry.get("url") or entry.get("webpage_url")
    if entry.get("extractor_key") in GENERIC_EXTRACTORS and media_url:
        page = entry.get("webpage_url")
        if single and page and _is_choice(entry):
            return _url_identity(page), page
        return _url_identity(media_url), media_url
    return str(entry.get("id") or _url_identity(media_url)), entry.get("webpage_url") or media_url


def _is_choice(entry: Mapping[str, Any]) -> bool:
    protocol = str(entry.get("protocol") or "")
    return len(entry.get("formats") or ()) > 1 or "m3u8" in protocol or "dash" in protocol


def _order_of(task: Mapping[str, Any] | None) -> VideoOrder | None:
    """The lease's video order, checked as everything a coordinator sends is."""
    order = (task or {}).get("video")
    if order is None:
        return None
    try:
        return check_order(order)
    except BadChoice as problem:
        raise Failure(FailureClass.PERMANENT, f"refused by this node: {problem}") from None


def _format_options(order: VideoOrder | None) -> dict[str, Any]:
    """yt-dlp options for the order: the selector, the container, and for ``audio`` the
    sound alone (extracted without re-encoding when the site serves no audio-only stream)."""
    if order is None:
        return {}
    options: dict[str, Any] = {"format": order["format"]} if "format" in order else {}
    if order.get("merge_output_format"):
        options["merge_output_format"] = order["merge_output_format"]
    if order.get("preset") == AUDIO_PRESET:
        options["postprocessors"] = [{"key": "FFmpegExtractAudio", "preferredcodec": "best"}]
    return options


class _Limits:
    """yt-dlp's match filter, plus the order's limits: checked on each video's info after
    its format is chosen and before any of its media is fetched (the refusal is kept)."""

    def __init__(self, order: VideoOrder | None):
        self.order = order
        self.refusal: str | None = None

    def wrap(self, site_filter):
        def check(info: dict[str, Any], incomplete: bool = False) -> str | None:
            if site_filter is not None:
                reason = site_filter(info, incomplete=incomplete)
                if reason is not None:
                    return reason
            size = info.get("filesize") or info.get("filesize_approx")
            refusal = over_limit(self.order, duration=info.get("duration"), filesize=None if incomplete else size)
            if refusal:
                self.refusal = refusal
            return refusal

        return check

    def check_written(self, written: list[Written]) -> None:
        """The last word, for a site that told neither size nor duration before: what was
        written over a limit is removed and the task refused all the same."""
        size = sum(item.path.stat().st_size for item in written)
        durations = [item.metadata.get("duration") for item in written]
        refusal = over_limit(self.order, duration=max((d for d in durations if d), default=None), filesize=size)
        if refusal:
            for item in written:
                item.path.unlink(missing_ok=True)
            raise Failure(FailureClass.PERMANENT, f"{refusal} (known only once downloaded; not kept)")


def _url_identity(url: str) -> str:
    if len(url) <= MAX_REMOTE_ID:
        return url
    return "url-" + hashlib.sha256(url.encode()).hexdigest()


class _ConfinedYoutubeDL(yt_dlp.YoutubeDL):
    """Refuses, before writing, any file name outside the job's folders (a hostile id or
    title in a template could otherwise climb out), and any request that is not http(s):
    a page may point a video at ``ftp:`` or ``file:``, which yt-dlp's own handlers open."""

    def __init__(self, params: dict[str, Any], *, confined_to: tuple[Path, ...] | None = None):
        super().__init__(params)
        self.confined_to = confined_to
        self.refused: str | None = None

    def add_default_info_extractors(self):
        """yt-dlp's own list, worked out once per process: every instance (one per job)
        would otherwise filter its whole list of extractors again."""
        if "allowed_extractors" in self.params:
            return super().add_default_info_extractors()
        for extractor in _default_extractors():  # classes, and the one instance ("end") made anew
            self.add_info_extractor(extractor if isinstance(extractor, type) else type(extractor)())
        return None

    def _forceprint(self, key, info_dict):
        """yt-dlp renders the formats, thumbnails and subtitles tables for every video in
        case a print template asks for them; when none does, skip that work."""
        if info_dict is not None and not self._prints(key):
            return dict(info_dict)
        return super()._forceprint(key, info_dict)

    def _prints(self, key: str) -> bool:
        return bool(
            self.params["forceprint"].get(key)
            or self.params["print_to_file"].get(key)
            or any(self.params.get(option) for option in FORCED_PRINTS)
        )

    def urlopen(self, req):
        url = str(req if isinstance(req, str) else getattr(req, "url", None) or getattr(req, "full_url", ""))
        if not is_fetched_url(url):
            self.refused = scheme_refusal(url)
            raise DownloadError(self.refused)
        return super().urlopen(req)

    def prepare_filename(self, info_dict, dir_type="", *, outtmpl=None, warn=False):
        path = super().prepare_filename(info_dict, dir_type, outtmpl=outtmpl, warn=warn)
        if path and self.confined_to is not None and not any(within(path, root) for root in self.confined_to):
            self.refused = f"refused by this node: the job would write {path}, outside --dest"
            raise DownloadError(self.refused)
        return path


def _share_tls_contexts() -> None:
    """One TLS context per distinct setting for the whole process, as one plain yt-dlp
    run has: yt-dlp builds one (certifi's bundle read and parsed) for each
    ``YoutubeDL``'s first request, and a node makes a ``YoutubeDL`` per job."""
    if not hasattr(networking_common.make_ssl_context, "cache_info"):
        networking_common.make_ssl_context = functools.lru_cache(maxsize=16)(networking_common.make_ssl_context)


_share_tls_contexts()


@functools.cache
def _default_extractors() -> tuple[Any, ...]:
    """The extractors a plain ``YoutubeDL`` loads, in its order."""
    probe = yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, "logger": _Messages()})
    return tuple(probe._ies.values())


def warm_extractors() -> None:
    """List the extractors and compile each one's URL pattern (yt-dlp keeps them on the
    class); a URL no pattern matches makes every one of them look. Then import their
    modules, which yt-dlp loads lazily: a page that no extractor claims has the generic
    one ask every extractor for embedded videos, importing them all in each worker."""
    for extractor in _default_extractors():
        extractor.suitable("http://warm.invalid/")
    importlib.import_module("yt_dlp.extractor._extractors")


def _run(ydl: yt_dlp.YoutubeDL, url: str, *, download: bool) -> dict[str, Any]:
    try:
        info = ydl.extract_info(url, download=download)
    except DownloadError as error:
        if getattr(ydl, "refused", None):
            raise Failure(FailureClass.PERMANENT, ydl.refused) from None
        if (fault := node_fault_of(error) or node_fault_of(str(error))) is not None:
            raise fault from None
        raise _classify(error) from None
    if getattr(ydl, "refused", None):
        raise Failure(FailureClass.PERMANENT, ydl.refused)
    if info is None:
        raise Failure(FailureClass.TRANSIENT, f"yt-dlp returned nothing for {url}")
    return ydl.sanitize_info(info) if not download else info


def _classify(error: DownloadError) -> Failure:
    cause = error.exc_info[1] if error.exc_info else None
    seen = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, HTTPError):
            response = cause.response
            retry_after = response.headers.get("Retry-After") if response is not None else None
            return classify_http([(cause.status, getattr(response, "url", "") or "", retry_after)])
        if isinstance(cause, UnsupportedError):
            return Failure(FailureClass.PERMANENT, f"unsupported URL: {cause.url if hasattr(cause, 'url') else cause}")
        if isinstance(cause, TransportError):
            return Failure(FailureClass.TRANSIENT, f"network error: {cause}")
        cause = getattr(cause, "cause", None) or cause.__cause__
    message = str(error).removeprefix("ERROR: ")
    if "Unsupported URL" in message:
        return Failure(FailureClass.PERMANENT, message)
    return Failure(FailureClass.TRANSIENT, message)


class _Messages:
    """yt-dlp's logger: keep messages for error reports, print nothing."""

    def __init__(self):
        self.lines: list[str] = []

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        self.lines.append(message)

    def error(self, message: str) -> None:
        self.lines.append(message)
