"""Regenerate the demo site's small, real video files (run by hand; not needed at run time).

    python -m venv /tmp/av && /tmp/av/bin/pip install av numpy && /tmp/av/bin/python demo/media/make_videos.py

Each clip is 1 s, 96x64, 10 fps: a moving bar over a colour that differs per clip, so
every file has different bytes (and a different sha256).
"""

from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).parent
CLIPS = [
    ("clip1", "mp4", "libx264", (200, 40, 40)),
    ("clip2", "mp4", "libx264", (40, 200, 40)),
    ("clip3", "mp4", "libx264", (40, 40, 200)),
    ("clip4", "webm", "libvpx", (200, 200, 40)),
    ("clip5", "webm", "libvpx", (40, 200, 200)),
]


def make(name: str, ext: str, codec: str, colour: tuple[int, int, int]) -> None:
    path = HERE / f"{name}.{ext}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(10):
            frame = np.zeros((64, 96, 3), dtype=np.uint8)
            frame[:, :] = colour
            frame[:, index * 9 : index * 9 + 8] = (255, 255, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(path, path.stat().st_size)


if __name__ == "__main__":
    for clip in CLIPS:
        make(*clip)
