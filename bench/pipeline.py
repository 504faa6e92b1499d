"""The client pipeline against plain gallery-dl on the same URLs: 1,000 posts of the demo
site, 50 ms added to every request (two requests per post: the API, then the file).

plain gallery-dl in one process, and in 8 processes over 125 URLs each (the ceiling for
8 workers), against ``python -m client download --jobs 1`` and ``--jobs 8`` pulling the
same URLs as tasks from a real coordinator (gunicorn, SQLite), hashing every file and
writing its sidecar on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from demo.catalog import Catalog
from support.proc import PeakRss
from support.processes import REPO_ROOT, demo_sites, start_coordinator, start_demo_site

from . import fill


def _count(folder: Path) -> tuple[int, int]:
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix not in (".json", ".part") and ".fetchfleet" not in p.parts
    ]
    return len(files), sum(p.stat().st_size for p in files)


def _plain(urls: list[str], processes: int, config: Path, workdir: Path, label: str) -> dict:
    out = workdir / label
    chunks = [urls[i::processes] for i in range(processes)]
    lists = []
    for number, chunk in enumerate(chunks):
        path = workdir / f"{label}-{number}.txt"
        path.write_text("\n".join(chunk) + "\n")
        lists.append(path)
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gallery_dl",
                "--config-ignore",
                "-c",
                str(config),
                "-q",
                "-d",
                str(out),
                "-i",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for path in lists
    ]
    codes = [process.wait(3600) for process in running]
    elapsed = time.perf_counter() - started
    files, size = _count(out)
    return {
        "processes": processes,
        "seconds": round(elapsed, 2),
        "files": files,
        "bytes": size,
        "exit_codes": sorted(set(codes)),
        "files_per_second": round(files / elapsed, 2),
    }


def _client(server, key: str, jobs: int, workdir: Path, env: dict, label: str, sample_memory: bool) -> dict:
    dest = workdir / label
    command = [
        sys.executable,
        "-m",
        "client",
        "--server",
        server.url,
        "--key",
        key,
        "download",
        "demo",
        "100",
        "--drain",
        "--jobs",
        str(jobs),
        "--dest",
        str(dest),
        "--no-progress",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = PeakRss(process.pid) if sample_memory else None
    if sampler:
        sampler.start()
    stdout, stderr = process.communicate(timeout=3600)
    elapsed = time.perf_counter() - started
    if sampler:
        sampler.stop()
    files, size = _count(dest)
    result = {
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "files": files,
        "bytes": size,
        "exit_code": process.returncode,
        "summary": stdout.strip(),
        "files_per_second": round(files / elapsed, 2),
    }
    if sampler:
        result["peak_rss_bytes"] = {"parent": sampler.peak_parent, "with_workers": sampler.peak_total}
    if process.returncode != 0:
        result["stderr"] = stderr[-2000:]
    return result


def _warm(site_url: str, catalog: Catalog, count: int) -> None:
    """Render every image once, so the site's drawing time is not in anyone's numbers."""

    def fetch(number: int) -> None:
        requests.get(f"{site_url}/data/{catalog.post(number).file_name}", timeout=60).raise_for_status()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fetch, range(1, count + 1)))


def run(plan, workdir: Path, progress) -> dict:
    site = start_demo_site(workdir, posts=plan.files, latency=plan.latency, image_size=plan.image_size)
    servers = [site]
    try:
        catalog = Catalog(plan.files, plan.image_size)
        _warm(site.url, catalog, plan.files)
        urls = [f"{site.url}/post/show/{number}" for number in range(1, plan.files + 1)]
        config = workdir / "gallery-dl.json"
        config.write_text(
            json.dumps(
                {
                    "extractor": {"moebooru": {"demo": {"root": site.url}}},
                    "output": {"mode": "null"},
                    "cache": {"file": None},
                }
            )
        )
        results = {"files": plan.files, "latency_seconds": plan.latency, "image_size": plan.image_size}
        results["gallery_dl_1"] = _plain(urls, 1, config, workdir, "plain-1")
        progress(f"plain gallery-dl, 1 process: {results['gallery_dl_1']['files_per_second']} files/s")
        results["gallery_dl_8"] = _plain(urls, 8, config, workdir, "plain-8")
        progress(f"plain gallery-dl, 8 processes: {results['gallery_dl_8']['files_per_second']} files/s")

        url = f"sqlite:///{workdir / 'pipeline.sqlite3'}"
        sites = demo_sites(site.url)
        key = fill.prepare(url)
        fill.add_download_tasks(url, "demo", [(post.rsplit("/", 1)[1], post) for post in urls])
        coordinator = start_coordinator(url, sites, workdir, workers=2)
        servers.append(coordinator)
        env = {
            **os.environ,
            "FETCHFLEET_CONFIG": str(workdir / "coordinator_config.py"),
            "FETCHFLEET_GALLERY_DL_CONFIG": '""',
        }
        results["client_1"] = _client(coordinator, key, 1, workdir, env, "client-1", False)
        progress(f"client --jobs 1: {results['client_1']['files_per_second']} files/s")
        fill.requeue_downloads(url)
        results["client_8"] = _client(coordinator, key, 8, workdir, env, "client-8", True)
        progress(f"client --jobs 8: {results['client_8']['files_per_second']} files/s")
        results["client_1_vs_gallery_dl_1"] = round(
            results["client_1"]["files_per_second"] / results["gallery_dl_1"]["files_per_second"], 3
        )
        results["client_8_vs_gallery_dl_8"] = round(
            results["client_8"]["files_per_second"] / results["gallery_dl_8"]["files_per_second"], 3
        )
        results["gallery_dl_8_vs_1"] = round(
            results["gallery_dl_8"]["files_per_second"] / results["gallery_dl_1"]["files_per_second"], 2
        )
        return results
    finally:
        for server in reversed(servers):
            server.stop()
