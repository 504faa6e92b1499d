"""Worker processes for gallery-dl / yt-dlp jobs (their configuration is process-global).

Workers come from a ``forkserver``: one clean, thread-free process that imports the heavy
modules once (gallery-dl's core, numpy, imagehash, scipy's DCT; yt-dlp when a site uses
it), and forks every worker from there, warm. Spawning each worker fresh cost ~0.6 s of
CPU apiece, 5 s for ``--jobs 8`` on a 2-core node. Nothing from the parent leaks in (its
threads, sockets, locks), and gallery-dl's extractor modules are deliberately *not*
preloaded: they read the site instances from the config when first imported, which
each worker sets first.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from . import worker

PRELOAD = [
    "client.fork_server",  # first: SIGTERM ignored from here on (the node process decides)
    "client.worker",
    "client.hashing",
]
#: What each engine's jobs use, imported once by the fork server rather than by every
#: worker: gallery-dl and the image hashes (images), yt-dlp (its extractors imported and
#: their URL patterns compiled) and PyAV (videos, probed).
ENGINE_PRELOAD = {
    "gallery-dl": ["gallery_dl.job", "numpy", "PIL.Image", "imagehash", "scipy.fftpack"],
    "yt-dlp": ["yt_dlp", "av", "client.engines.warm"],
}


def _context(sites: dict[str, dict[str, Any]]):
    context = multiprocessing.get_context("forkserver")
    engines = sorted({site.get("engine") for site in sites.values()} & set(ENGINE_PRELOAD))
    extra = [module for engine in engines for module in ENGINE_PRELOAD[engine]]
    context.set_forkserver_preload(PRELOAD + extra)  # no effect once this process's forkserver runs
    return context


class WorkerPool:
    def __init__(self, jobs: int, settings: dict[str, Any], sites: dict[str, dict[str, Any]]):
        self.jobs = jobs
        self.sites = sites
        self._executor = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=_context(sites),
            initializer=worker.initialize,
            initargs=(settings, sites, os.getpid()),
        )

    def knows(self, sites: dict[str, dict[str, Any]]) -> bool:
        """True when every site of a lease is configured in these workers exactly so."""
        return all(self.sites.get(name) == info for name, info in sites.items())

    def submit(self, function, *args) -> Future:
        """Raises ``BrokenProcessPool`` also when a worker cannot be started (the fork
        server killed while it forks one surfaces as ``EOFError`` or ``OSError``)."""
        try:
            return self._executor.submit(function, *args)
        except (EOFError, OSError) as exc:
            raise BrokenProcessPool(f"could not start a worker process: {exc!r}") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        """Hard stop: end running jobs now (their partial files stay ``.part``)."""
        processes = list(getattr(self._executor, "_processes", {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(5)
