"""Coordinator memory with a large queue: RSS of the gunicorn master and workers after
they have served leases against a database holding ``plan.memory_tasks`` queued tasks.
(The client's RSS during ``--jobs 8`` is sampled in the pipeline benchmark.)"""

from __future__ import annotations

from pathlib import Path

from support.proc import children, rss_bytes
from support.processes import start_coordinator

from . import fill
from .throughput import WORKERS, database, start_wrk


def run(plan, workdir: Path, progress) -> dict:
    results = {}
    for backend in plan.backends:
        url = database(backend, workdir, plan.pg_server, "ff_bench_memory")
        key = fill.prepare(url)
        fill.fill(url, plan.memory_tasks)
        server = start_coordinator(url, fill.SITES, workdir, workers=WORKERS[backend])
        try:
            process = start_wrk(server.url, key, 16, 100, plan.seconds)
            process.communicate()
            workers = children(server.process.pid)
            results[backend] = {
                "queued_tasks": plan.memory_tasks,
                "master_rss_bytes": rss_bytes(server.process.pid),
                "worker_rss_bytes": sorted(rss_bytes(pid) for pid in workers),
                "total_rss_bytes": rss_bytes(server.process.pid) + sum(rss_bytes(pid) for pid in workers),
            }
        finally:
            server.stop()
        progress(
            f"{backend:10} coordinator RSS {results[backend]['total_rss_bytes'] / 2**20:.0f} MiB "
            f"with {plan.memory_tasks} tasks queued"
        )
    return results
