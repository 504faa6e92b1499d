"""ffmpeg on a node: yt-dlp needs it to merge a video's separate streams (HLS, DASH), and
``ffprobe`` tells what a written video or audio file really holds (duration, size in
pixels, codecs, container) for its file record and sidecar.

The node's ``YT_DLP_OPTIONS["ffmpeg_location"]`` (a folder or the ffmpeg binary), when
set, is where both are looked for, as yt-dlp does; otherwise ``PATH``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.protocol import VideoInfo

PROBE_SECONDS = 60
#: ffprobe's format names, as a file's container is usually called.
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


def probe(path: Path, settings: Mapping[str, Any] | None = None) -> VideoInfo | None:
    """What the file holds, or None when it holds no audio or video (or ffprobe is missing)."""
    binary = tool("ffprobe", settings)
    if binary is None:
        return None
    # An absolute path: a file name can never be read as an option.
    command = [binary, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(Path(path).resolve())]
    try:
        answer = subprocess.run(
            command, capture_output=True, timeout=PROBE_SECONDS, check=True, stdin=subprocess.DEVNULL
        )
        found = json.loads(answer.stdout or b"{}")
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    streams = [stream for stream in found.get("streams") or [] if isinstance(stream, dict)]
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        return None
    container = str((found.get("format") or {}).get("format_name") or "") or None
    return {
        "duration": _seconds((found.get("format") or {}).get("duration")),
        "width": _pixels(video, "width"),
        "height": _pixels(video, "height"),
        "vcodec": _name(video),
        "acodec": _name(audio),
        "container": CONTAINERS.get(container, container.split(",")[0][:32]) if container else None,
    }


def _is_cover(stream: Mapping[str, Any]) -> bool:
    """An embedded picture (cover art) is not the video."""
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return round(seconds, 3) if math.isfinite(seconds) and 0 <= seconds <= 10**7 else None


def _pixels(stream: Mapping[str, Any] | None, key: str) -> int | None:
    value = (stream or {}).get(key)
    return value if isinstance(value, int) and 0 < value <= 100_000 else None


def _name(stream: Mapping[str, Any] | None) -> str | None:
    name = (stream or {}).get("codec_name")
    return str(name)[:32] if name else None


def probed(path: Path, metadata: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> VideoInfo | None:
    """The probe of a written file, its gaps filled from what the engine said of the video
    (yt-dlp's info: duration, width, height, codecs, extension); None when neither knows."""
    found = probe(path, settings)
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
