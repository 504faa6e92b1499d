"""Lease latency against queue size: the same 100-task lease with 10k, 100k and 1M tasks
queued. With the partial queue index a lease reads ~100 index entries however long the
queue is; a scan would grow with it. Measured in-process (the database and the leasing
code only), with scattered priorities so leases pick rows all over the table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from sqlalchemy import select

from server import context, create_app
from server.extensions import db
from server.leasing import lease_tasks, release_lease
from server.models import ApiKey

from . import fill
from .throughput import database


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _lease_timings(url: str, leases: int, *, kind: str, site: str | None) -> dict:
    """p50 / p99 ms of ``leases`` 100-task leases (each released again), 20 warm-up ones excluded."""
    app = create_app({"DATABASE_URL": url, "SITES": fill.SITES})
    timings = []
    with app.app_context():
        client = db.session.scalar(select(ApiKey))
        db.session.commit()
        for number in range(leases + 20):
            started = time.perf_counter()
            grant = lease_tasks(
                db.session,
                client=client,
                kind=kind,
                n=100,
                site=site,
                sites=context.sites(),
                policy=context.policy(),
            )
            elapsed = time.perf_counter() - started
            assert len(grant.tasks) == 100
            release_lease(db.session, lease_id=grant.lease.id, client=client)
            if number >= 20:  # warm-up excluded
                timings.append(elapsed * 1000)
        db.session.remove()
        db.engine.dispose()
    return {
        "p50_ms": round(statistics.median(timings), 3),
        "p99_ms": round(percentile(timings, 0.99), 3),
        "leases": leases,
    }


def measure(url: str, size: int, leases: int) -> dict:
    fill.prepare(url)
    fill.fill(url, size, priorities=10)
    return {"queued": size, **_lease_timings(url, leases, kind="download", site=fill.BENCH_SITE)}


def subscriptions(url: str, size: int, leases: int, queued: int = 5000) -> dict:
    """The 100-task metadata lease with ``size`` subscriptions waiting for their next
    check (spread over the next day, outside the queue) beside ``queued`` items to resolve:
    the lease queues the few that come due and must not walk the rest."""
    fill.prepare(url)
    fill.fill_subscriptions(url, size, queued=queued)
    return {"subscriptions": size, "queued": queued, **_lease_timings(url, leases, kind="metadata", site=None)}


def run(plan, workdir: Path, progress) -> dict:
    results = {}
    for backend in plan.backends:
        rows = []
        for size in plan.queue_sizes:
            url = database(backend, workdir, plan.pg_server, "ff_bench_scaling")
            rows.append(measure(url, size, plan.scaling_leases))
            progress(f"{backend:10} {size:>9} queued: lease p50 {rows[-1]['p50_ms']} ms, p99 {rows[-1]['p99_ms']} ms")
        waiting = []
        for size in plan.subscription_sizes:
            url = database(backend, workdir, plan.pg_server, "ff_bench_subscriptions")
            waiting.append(subscriptions(url, size, plan.scaling_leases))
            progress(f"{backend:10} {size:>9} subscriptions waiting: metadata lease p50 {waiting[-1]['p50_ms']} ms")
        results[backend] = {
            "sizes": rows,
            "p50_ratio_largest_to_smallest": round(rows[-1]["p50_ms"] / rows[0]["p50_ms"], 2),
            "subscriptions": waiting,
            "subscriptions_p50_ratio": round(waiting[-1]["p50_ms"] / waiting[0]["p50_ms"], 2),
        }
    return results
