"""yt-dlp as a library: list videos without downloading, download and learn the final
paths, and classify ``DownloadError`` causes (HTTP status, unsupported URL, network).

Options are per ``YoutubeDL`` instance, so nothing global is shared between jobs.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, UnsupportedError

from common.states import FailureClass

from .base import Engine, Failure, Found, Written, classify_http, json_safe

#: yt-dlp's fallback extractors name videos by page position; their media URL is steadier.
GENERIC_EXTRACTORS = {"Generic", "HTML5MediaEmbed"}
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
    "webpage_url",
    "extractor_key",
    "tags",
    "view_count",
    "like_count",
)


class YtDlpEngine(Engine):
    name = "yt-dlp"

    def _options(self, site: str, **extra: Any) -> dict[str, Any]:
        site_options = dict((self.sites.get(site) or {}).get("options") or {})
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
            **extra,
        }
        options["logger"] = _Messages()
        return options

    def resolve(self, url: str, site: str) -> list[Found]:
        with yt_dlp.YoutubeDL(self._options(site, extract_flat="in_playlist")) as ydl:
            info = _run(ydl, url, download=False)
        entries = [entry for entry in (info.get("entries") or [info]) if entry]
        found: dict[str, Found] = {}
        for entry in entries:
            remote_id, download_url = _identity(entry)
            if remote_id not in found:
                metadata = json_safe({key: entry[key] for key in METADATA_KEYS if entry.get(key) is not None})
                found[remote_id] = Found(remote_id, download_url, metadata)
        return list(found.values())

    def download(self, url: str, site: str, directory: Path) -> list[Written]:
        template = str(directory / "%(id)s.%(ext)s")
        with yt_dlp.YoutubeDL(self._options(site, outtmpl={"default": template})) as ydl:
            info = _run(ydl, url, download=True)
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
        return written


def _identity(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(remote id, URL to download) of one listed video."""
    media_url = entry.get("url") or entry.get("webpage_url")
    if entry.get("extractor_key") in GENERIC_EXTRACTORS and media_url:
        name = posixpath.basename(urllib.parse.urlsplit(media_url).path)
        return (posixpath.splitext(name)[0] or media_url), media_url
    return str(entry.get("id") or media_url), entry.get("webpage_url") or media_url


def _run(ydl: yt_dlp.YoutubeDL, url: str, *, download: bool) -> dict[str, Any]:
    try:
        info = ydl.extract_info(url, download=download)
    except DownloadError as error:
        raise _classify(error) from None
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
