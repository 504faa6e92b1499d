"""The demo site's streamed videos, as real video sites serve them: HLS (a master playlist
of 360p and 720p video variants and a separate audio rendition), DASH (separate video and
audio representations), a ``<video>`` with several progressive sources, and a long video.

Built from ffmpeg's test sources on first use (a few seconds) into a cache folder keyed
by this file's recipe and the ffmpeg version, and deterministic (bit-exact encoders, one
thread): the same build gives the same bytes.

    python -m demo.streams          # build now and print where
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

#: Bump to rebuild every cache when the recipe changes in a way the text below does not show.
RECIPE = 1


@dataclass(frozen=True)
class Stream:
    name: str
    kind: str  # "hls" | "dash" | "sources"
    title: str
    seconds: int
    hue: int  # colour turn of the test picture: every stream has its own bytes
    tone: int  # Hz of its sine (0: no sound)
    heights: tuple[int, ...] = (360, 720)
    segment_seconds: int = 1
    fps: int = 25


HLS_VIDEOS = 20
STREAMS: dict[str, Stream] = {
    **{
        f"hls-{n:02d}": Stream(f"hls-{n:02d}", "hls", f"HLS clip {n}", 2, hue=n * 17, tone=300 + n * 20)
        for n in range(1, HLS_VIDEOS + 1)
    },
    "dash-01": Stream("dash-01", "dash", "DASH clip", 2, hue=200, tone=660),
    "sources-01": Stream(
        "sources-01", "sources", "Three sizes of one clip", 2, hue=250, tone=880, heights=(360, 480, 720)
    ),
    "long-01": Stream(
        "long-01", "hls", "An hour of test card", 3600, hue=300, tone=0, heights=(36,), segment_seconds=60, fps=1
    ),
}


class Fault(NamedTuple):
    """A stream served from another stream's files with a fault on one media segment:
    ``times`` failures (None: every time), then it answers."""

    base: str
    segment: str
    times: int | None
    #: "500" (a server error), "404" (the segment is gone), "drop" (half the segment
    #: sent, then the connection closed)
    how: str


FAULTS = {
    "flaky-01": Fault("hls-01", "720/seg_001.ts", 1, "500"),
    "broken-01": Fault("hls-02", "720/seg_001.ts", None, "404"),
    "dropped-01": Fault("hls-03", "720/seg_001.ts", None, "drop"),
}
MEDIA_SUFFIXES = (".ts", ".m4s", ".mp4", ".aac")
_BITEXACT = ["-fflags", "+bitexact", "-map_metadata", "-1"]


def ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fetchfleet" / "demo-streams"


def build(root: Path | None = None) -> Path:
    """The folder of every stream (built once per recipe and ffmpeg version; concurrent
    callers wait for one build). Raises RuntimeError without ffmpeg."""
    binary = ffmpeg()
    if binary is None:
        raise RuntimeError("ffmpeg is not installed: the demo site's streams need it (Debian: apt-get install ffmpeg)")
    version = subprocess.run([binary, "-version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    key = hashlib.sha256(f"{RECIPE}\n{version}\n{Path(__file__).read_text()}".encode()).hexdigest()[:16]
    root = root or cache_root()
    target = root / key
    if (target / "done").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "done").exists():
            return target
        work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=root))
        try:
            for stream in STREAMS.values():
                _BUILDERS[stream.kind](binary, stream, work / stream.name)
            (work / "done").write_text(version + "\n")
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _size(height: int) -> str:
    width = (height * 16 // 9 + 1) // 2 * 2
    return f"{width}x{height}"


def _picture(stream: Stream, height: int) -> list[str]:
    source = f"testsrc2=size={_size(height)}:rate={stream.fps}:duration={stream.seconds},hue=h={stream.hue}"
    return ["-f", "lavfi", "-i", source]


def _sound(stream: Stream) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={stream.tone}:sample_rate=48000:duration={stream.seconds}"]


def _h264(stream: Stream) -> list[str]:
    gop = str(stream.fps * stream.segment_seconds)
    return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "32", "-threads", "1", "-g", gop, "-keyint_min", gop]
    # (scene cuts off below, so every segment starts on a key frame)


def _video_options(stream: Stream) -> list[str]:
    return [*_h264(stream), "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-flags:v", "+bitexact"]


_AAC = ["-c:a", "aac", "-b:a", "64k", "-flags:a", "+bitexact"]


def _run(binary: str, *arguments: str | Path) -> None:
    subprocess.run([binary, "-v", "error", "-y", *map(str, arguments)], check=True, stdin=subprocess.DEVNULL)


def _hls_playlist(stream: Stream, folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    return [
        "-f",
        "hls",
        "-hls_time",
        str(stream.segment_seconds),
        "-hls_playlist_type",
        "vod",
        "-hls_segment_filename",
        str(folder / "seg_%03d.ts"),
        str(folder / "index.m3u8"),
    ]


def _bandwidth(folder: Path, seconds: int) -> int:
    return max(1, sum(path.stat().st_size for path in folder.glob("seg_*")) * 8 // seconds)


def _build_hls(binary: str, stream: Stream, out: Path) -> None:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio = ""
    if stream.tone:
        _run(binary, *_sound(stream), *_AAC, *_BITEXACT, *_hls_playlist(stream, out / "audio"))
        lines.append(
            '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="main",LANGUAGE="en",DEFAULT=YES,URI="audio/index.m3u8"'
        )
        audio = ',AUDIO="aac"'
    for height in stream.heights:
        folder = out / str(height)
        _run(binary, *_picture(stream, height), "-map", "0:v", *_video_options(stream), *_BITEXACT,
             *_hls_playlist(stream, folder))  # fmt: skip
        bandwidth = _bandwidth(folder, stream.seconds) + (64_000 if stream.tone else 0)
        codecs = "avc1.64001f,mp4a.40.2" if stream.tone else "avc1.64001f"
        lines.append(f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={_size(height)},CODECS="{codecs}"{audio}')
        lines.append(f"{height}/index.m3u8")
    (out / "master.m3u8").write_text("\n".join(lines) + "\n")


def _build_dash(binary: str, stream: Stream, out: Path) -> None:
    out.mkdir(parents=True)
    height = max(stream.heights)
    _run(
        binary,
        *_picture(stream, height),
        *_sound(stream),
        "-map", "0:v", "-map", "1:a",
        *_video_options(stream),
        *_AAC,
        *_BITEXACT,
        "-f", "dash",
        "-seg_duration", str(stream.segment_seconds),
        "-use_template", "1",
        "-use_timeline", "1",
        "-adaptation_sets", "id=0,streams=v id=1,streams=a",
        "-init_seg_name", "init-$RepresentationID$.m4s",
        "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
        out / "manifest.mpd",
    )  # fmt: skip


def _build_sources(binary: str, stream: Stream, out: Path) -> None:
    out.mkdir(parents=True)
    for height in stream.heights:
        _run(binary, *_picture(stream, height), *_sound(stream), "-map", "0:v", "-map", "1:a",
             *_video_options(stream), *_AAC, *_BITEXACT, "-movflags", "+faststart", out / f"{height}.mp4")  # fmt: skip


_BUILDERS = {"hls": _build_hls, "dash": _build_dash, "sources": _build_sources}


def manifest_of(stream: Stream) -> str | None:
    """The file a player starts from (None: a page of progressive sources)."""
    return {"hls": "master.m3u8", "dash": "manifest.mpd"}.get(stream.kind)


def is_media(path: str) -> bool:
    """A request for media bytes (a segment or a file), not a playlist or manifest."""
    return path.endswith(MEDIA_SUFFIXES)


if __name__ == "__main__":
    print(build())
