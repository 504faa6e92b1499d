"""ffmpeg on a node, and what a written video holds.

yt-dlp needs ``ffmpeg`` (and ``ffprobe``) to merge a video's separate streams (HLS, DASH)
and to extract audio: the node's ``YT_DLP_OPTIONS["ffmpeg_location"]`` (a folder or the
ffmpeg binary), when set, is where both are looked for, as yt-dlp does; otherwise
``PATH``. What each written video or audio file holds (duration, size in pixels, codecs,
container) is read with PyAV for its file record and sidecar.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.protocol import VideoInfo

#: libav's format names, as a file's container is usually called.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "mpegts": "ts"}


def tool(name: str, settings: Mapping[str, Any] | None = None) -> str | None:
    """Where ``ffmpeg`` / ``ffprobe`` is, or None."""
    location = ((settings or {}).get("YT_DLP_OPTIONS") or {}).get("ffmpeg_location")
    if location:
        place = Path(location)
        folder = place if place.is_dir() else place.parent
        found = shutil.which(name, path=str(folder))
        if found:
            return found
    return shutil.which(name)


def ffmpeg_missing(settings: Mapping[str, Any] | None = None) -> str | None:
    """One line saying what is missing, or None when ffmpeg and ffprobe are both there."""
    missing = [name for name in ("ffmpeg", "ffprobe") if tool(name, settings) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found: yt-dlp sites need ffmpeg to merge video and audio streams "
        "(Debian: apt-get install ffmpeg; or set YT_DLP_OPTIONS['ffmpeg_location'])"
    )


def probe(path: Path) -> VideoInfo | None:
    """What the file holds, or None when it holds no audio or video (or cannot be read).

    PyAV (libav's own demuxers, in-process): a few milliseconds, where starting ``ffprobe``
    costs tens of them per file. Only the container's headers are read, no frame decoded;
    a hostile file that crashed libav would take down this job's worker process, which the
    node replaces, not the node."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            streams = list(container.streams)
            video = next((s for s in streams if s.type == "video" and not _is_cover(s)), None)
            audio = next((s for s in streams if s.type == "audio"), None)
            if video is None and audio is None:
                return None
            seconds = container.duration / av.time_base if container.duration else None
            name = container.format.name or ""
    except (av.FFmpegError, OSError, ValueError, UnicodeError):
        return None
    return {
        "duration": _seconds(seconds),
        "width": _pixels(video, "width"),
        "height": _pixels(video, "height"),
        "vcodec": _codec(video),
        "acodec": _codec(audio),
        "container": _container(name, Path(path).suffix.lstrip(".").lower()),
    }


def _container(name: str, extension: str) -> str | None:
    """The file's own extension when the format lists it (``m4a`` of ``mov,mp4,m4a,...``),
    else the usual name of the format."""
    if not name:
        return None
    if extension and extension in name.split(","):
        return extension
    return CONTAINERS.get(name, name.split(",")[0][:32])


def _is_cover(stream: Any) -> bool:
    """An embedded picture (cover art) is not the video."""
    import av

    return av.stream.Disposition.attached_pic in stream.disposition


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return round(seconds, 3) if math.isfinite(seconds) and 0 <= seconds <= 10**7 else None


def _pixels(stream: Any, key: str) -> int | None:
    value = (stream.get(key) if isinstance(stream, Mapping) else getattr(stream, key, None)) if stream else None
    return value if isinstance(value, int) and 0 < value <= 100_000 else None


def _codec(stream: Any) -> str | None:
    name = getattr(getattr(stream, "codec_context", None), "name", None) if stream is not None else None
    return str(name)[:32] if name else None


def probed(path: Path, metadata: Mapping[str, Any]) -> VideoInfo | None:
    """The probe of a written file, its gaps filled from what the engine said of the video
    (yt-dlp's info: duration, width, height, codecs, extension); None when neither knows."""
    found = probe(path)
    said: VideoInfo = {
        "duration": _seconds(metadata.get("duration")),
        "width": _pixels(metadata, "width"),
        "height": _pixels(metadata, "height"),
        "vcodec": _said_codec(metadata.get("vcodec")),
        "acodec": _said_codec(metadata.get("acodec")),
        "container": str(metadata["ext"])[:32] if metadata.get("ext") else None,
    }
    if found is None:
        return said if said["duration"] is not None else None
    return {key: found[key] if found[key] is not None else said[key] for key in found}  # type: ignore[return-value]


def _said_codec(value: Any) -> str | None:
    return str(value).split(".")[0][:32] if value and value != "none" else None
