"""Lease and ``/stats`` latency against the size of the archive: one database per backend,
filled to 10k, 1M and 10M queued tasks in turn (the bench's fast fill), measured at each
size. With the partial queue index a lease reads ~100 index entries however long the
queue is; ``/stats`` reads the kept counts. Leases are measured in-process (the database
and the leasing code only), with scattered priorities so they pick rows all over the
table; ``/stats`` through the app (Flask's test client: everything but the socket). Beside
them, one recount of the tables: what ``/stats`` cost when it counted them. At 1M tasks
the SQLite database is moved to PostgreSQL with ``flask move-to`` (time and peak RSS)."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, select

from server import context, create_app
from server.counts import recounted
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


def _stats_timings(url: str, requests: int) -> dict:
    """p50 / p99 ms of ``GET /stats`` (20 warm-up requests excluded)."""
    app = create_app({"DATABASE_URL": url, "SITES": fill.SITES})
    client = app.test_client()
    timings = []
    for number in range(requests + 20):
        started = time.perf_counter()
        answer = client.get("/stats")
        elapsed = time.perf_counter() - started
        assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
        if number >= 20:
            timings.append(elapsed * 1000)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    return {"p50_ms": round(statistics.median(timings), 3), "p99_ms": round(percentile(timings, 0.99), 3)}


def _recount_seconds(url: str) -> float:
    """One count of the tables, as /stats did before it read kept counts."""
    engine = create_engine(url)
    with engine.connect() as connection:
        started = time.perf_counter()
        recounted(connection, datetime.now(UTC))
        elapsed = time.perf_counter() - started
    engine.dispose()
    return round(elapsed, 3)


def _move(url: str, plan, workdir: Path) -> dict:
    """``flask move-to`` of this SQLite database into a new PostgreSQL one, as an operator runs it."""
    target = fill.fresh_postgres(plan.pg_server, "ff_bench_move")
    out, seconds, peak = fill.run_flask(url, workdir, "move-to", target)
    rows = sum(int(line.split()[2]) for line in out.splitlines()[1:] if line.endswith(" ok"))
    return {"rows": rows, "seconds": round(seconds, 1), "peak_rss_bytes": peak}


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
        url = database(backend, workdir, plan.pg_server, "ff_bench_scaling")
        fill.prepare(url)
        rows, filled, moved = [], 0, None
        for size in plan.queue_sizes:
            started = time.monotonic()
            fill.fill(url, size - filled, priorities=10, seed=size)
            fill_seconds, filled = round(time.monotonic() - started, 1), size
            leases = _lease_timings(url, plan.scaling_leases, kind="download", site=fill.BENCH_SITE)
            row = {"queued": size, "fill_seconds": fill_seconds, **leases}
            row["stats"] = _stats_timings(url, plan.stats_requests)
            row["recount_seconds"] = _recount_seconds(url)
            rows.append(row)
            progress(
                f"{backend:10} {size:>10} queued: lease p50 {row['p50_ms']} ms, /stats p50 {row['stats']['p50_ms']} ms "
                f"(a recount: {row['recount_seconds']} s; filled in {fill_seconds} s)"
            )
            if backend == "sqlite" and size == plan.move_size:
                moved = _move(url, plan, workdir)
                mib = moved["peak_rss_bytes"] >> 20
                progress(f"move-to PostgreSQL at {size} tasks: {moved['seconds']} s, peak {mib} MiB")
        waiting = []
        for size in plan.subscription_sizes:
            url = database(backend, workdir, plan.pg_server, "ff_bench_subscriptions")
            waiting.append(subscriptions(url, size, plan.scaling_leases))
            progress(f"{backend:10} {size:>9} subscriptions waiting: metadata lease p50 {waiting[-1]['p50_ms']} ms")
        results[backend] = {
            "sizes": rows,
            "p50_ratio_largest_to_smallest": round(rows[-1]["p50_ms"] / rows[0]["p50_ms"], 2),
            "stats_p50_ratio_largest_to_smallest": round(rows[-1]["stats"]["p50_ms"] / rows[0]["stats"]["p50_ms"], 2),
            "subscriptions": waiting,
            "subscriptions_p50_ratio": round(waiting[-1]["p50_ms"] / waiting[0]["p50_ms"], 2),
        }
        if moved is not None:
            results[backend]["move_to_postgresql"] = moved
    return results
