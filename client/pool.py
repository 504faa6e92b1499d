"""Worker processes for gallery-dl / yt-dlp jobs (their configuration is process-global).

Spawned, not forked: a fresh interpreter per worker, so each engine registers its site
instances before its first extractor lookup, and no parent state (sockets, locks) leaks.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from . import worker


class WorkerPool:
    def __init__(self, jobs: int, settings: dict[str, Any], sites: dict[str, dict[str, Any]]):
        self.jobs = jobs
        self.sites = sites
        self._executor = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.initialize,
            initargs=(settings, sites),
        )

    def knows(self, sites: dict[str, dict[str, Any]]) -> bool:
        """True when every site of a lease is configured in these workers exactly so."""
        return all(self.sites.get(name) == info for name, info in sites.items())

    def submit(self, function, *args) -> Future:
        return self._executor.submit(function, *args)

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
