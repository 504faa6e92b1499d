"""Video over HLS against plain yt-dlp on the same URLs: the demo site's HLS streams (a
720p variant and a separate audio rendition each, merged by ffmpeg into one mp4).

Plain yt-dlp in one process over every URL, and in 4 processes over a quarter each,
against ``python -m client download --jobs 1`` and ``--jobs 4`` pulling the same pages
as tasks from a real coordinator (gunicorn, SQLite), probing, hashing and writing a
sidecar for each file on the way. Turns alternate (plain first, then client first) and
the medians compare; both choose the same format (``bv*+ba/b``, the ``best`` preset).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common.video import PRESETS
from support.processes import REPO_ROOT, demo_sites, start_coordinator, start_demo_site

from . import fill

SITE = "demotube"


def _files(folder: Path) -> dict[str, int]:
    return {
        path.name: path.stat().st_size
        for path in folder.rglob("*.mp4")
        if path.is_file() and ".fetchfleet" not in path.parts
    }


def _plain(urls: list[str], processes: int, out: Path) -> float:
    """Seconds for ``processes`` yt-dlp processes over their share of the URLs."""
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yt_dlp",
                "--quiet",
                "--no-progress",
                "--no-cache-dir",
                "--no-part",
                "--format",
                PRESETS["best"],
                "--output",
                str(out / "%(id)s.%(ext)s"),
                *urls[number::processes],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for number in range(processes)
    ]
    failed = [process.stderr.read().decode()[-500:] for process in running if process.wait(3600) != 0]
    if failed:
        raise RuntimeError(f"plain yt-dlp failed: {failed[0]}")
    return time.perf_counter() - started


def _client(server, key: str, jobs: int, count: int, dest: Path, env: dict) -> float:
    command = [
        *(sys.executable, "-m", "client", "--server", server.url, "--key", key),
        *("download", SITE, str(min(count, 100)), "--drain", "--jobs", str(jobs), "--dest", str(dest), "--no-progress"),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        output = f"{done.stdout[-500:]} {done.stderr[-1500:]}"
        raise RuntimeError(f"client --jobs {jobs} failed ({done.returncode}): {output}")
    return elapsed


def run(plan, workdir: Path, progress) -> dict:
    site = start_demo_site(workdir)
    servers = [site]
    try:
        pages = [f"{site.url}/stream/hls-{number:02d}" for number in range(1, plan.videos + 1)]
        url = f"sqlite:///{workdir / 'video.sqlite3'}"
        key = fill.prepare(url)
        fill.add_download_tasks(url, SITE, [(page, page) for page in pages])
        coordinator = start_coordinator(url, demo_sites(site.url), workdir, workers=2)
        servers.append(coordinator)
        env = {
            **os.environ,
            "FETCHFLEET_CONFIG": str(workdir / "coordinator_config.py"),
            "FETCHFLEET_GALLERY_DL_CONFIG": '""',
        }
        seconds: dict[str, list[float]] = {"plain_1": [], "client_1": [], "plain_4": [], "client_4": []}
        sizes: dict[str, dict[str, int]] = {}
        for turn in range(plan.video_turns):
            for jobs in (1, 4):
                order = ("plain", "client") if turn % 2 == 0 else ("client", "plain")
                for variant in order:
                    name = f"{variant}_{jobs}"
                    out = workdir / f"{name}-{turn}"
                    if variant == "plain":
                        seconds[name].append(_plain(pages, jobs, out))
                    else:
                        seconds[name].append(_client(coordinator, key, jobs, len(pages), out, env))
                        fill.requeue_downloads(url)
                    sizes[name] = _files(out)
                    progress(f"video {name:9} turn {turn}: {seconds[name][-1]:6.2f} s for {len(sizes[name])} videos")
        missing = [name for name, found in sizes.items() if len(found) != len(pages)]
        if missing:
            raise RuntimeError(f"videos missing from {missing}: {sizes}")
        medians = {name: round(statistics.median(values), 2) for name, values in seconds.items()}
        return {
            "videos": len(pages),
            "turns": plan.video_turns,
            "seconds": {name: [round(value, 2) for value in values] for name, values in seconds.items()},
            "median_seconds": medians,
            "bytes": {name: sum(found.values()) for name, found in sizes.items()},
            # speed relative to yt-dlp alone: its time over ours (1.0: as fast)
            "client_1_vs_yt_dlp_1": round(medians["plain_1"] / medians["client_1"], 3),
            "client_4_vs_yt_dlp_4": round(medians["plain_4"] / medians["client_4"], 3),
        }
    finally:
        for server in reversed(servers):
            server.stop()
