"""Inventory import: ``flask import-csv`` as cron runs it (the whole process), rows per
second for a file of new rows, the same file again (unchanged), and the file with every
tenth row changed; its peak RSS at two file sizes (memory must not grow with the file).
Beside it, the floor: the database alone loading the same items and tasks with the
fastest call it has (SQLite's executemany, PostgreSQL's COPY), no parsing or checks."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from . import fill
from .throughput import database

COLUMNS = "url,title,priority\n"


def _write_csv(path: Path, rows: int, *, changed_every: int | None = None) -> Path:
    with path.open("w") as out:
        out.write(COLUMNS)
        for n in range(rows):
            title = f"Title {n}" + (" (new)" if changed_every and n % changed_every == 0 else "")
            out.write(f"http://bench.test/post/{n},{title},{n % 5}\n")
    return path


def _import(url: str, path: Path, workdir: Path) -> dict:
    """One ``flask import-csv`` process: seconds, rows per second, peak RSS."""
    rows = sum(1 for _ in path.open()) - 1
    out, seconds, peak = fill.run_flask(url, workdir, "import-csv", "--quiet", str(path))
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "peak_rss_bytes": peak,
        "summary": out.strip().splitlines()[-1],
    }


def _floor(url: str, rows: int) -> dict:
    """Items and their metadata tasks loaded with the database's own bulk call."""
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    now = datetime.now(UTC)
    stamp = now.replace(tzinfo=None).isoformat(" ", timespec="microseconds") if sqlite else now
    items = (
        (n, url, url, f"Title {n}", n % 5, "{}", "h" * 64, "pending", stamp, stamp)
        for n, url in ((n, f"http://bench.test/post/{n}") for n in range(1, rows + 1))
    )
    tasks = (
        ("metadata", fill.BENCH_SITE, n, f"http://bench.test/post/{n}", "queued", n % 5, 0, stamp, stamp, stamp)
        for n in range(1, rows + 1)
    )
    item_columns = ("id", "key", "url", "title", "priority", "extra", "content_hash")
    item_columns += ("state", "created_at", "updated_at")
    task_columns = ("kind", "site", "item_id", "url", "state", "priority", "attempts", "available_at")
    task_columns += ("created_at", "updated_at")
    started = time.monotonic()
    fill._write_rows(engine, [("items", item_columns, items), ("tasks", task_columns, tasks)])
    seconds = time.monotonic() - started
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}


def _tasks(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM tasks")).scalar()
    engine.dispose()
    return count


def run(plan, workdir: Path, progress) -> dict:
    rows, small = plan.import_rows, plan.import_rows // 5
    files = {
        "new": _write_csv(workdir / "inventory.csv", rows),
        "changed": _write_csv(workdir / "inventory-changed.csv", rows, changed_every=10),
        "small": _write_csv(workdir / "inventory-small.csv", small),
    }
    results = {}
    for backend in plan.backends:
        url = database(backend, workdir, plan.pg_server, "ff_bench_import_floor")
        fill.prepare(url)
        floor = _floor(url, rows)
        progress(f"{backend:10} the database alone: {floor['rows_per_second']:,} rows/s")
        url = database(backend, workdir, plan.pg_server, "ff_bench_import_small")
        fill.prepare(url)
        small_run = _import(url, files["small"], workdir)
        url = database(backend, workdir, plan.pg_server, "ff_bench_import")
        fill.prepare(url)
        runs = {}
        order = (("new", files["new"]), ("unchanged", files["new"]), ("changed_10_percent", files["changed"]))
        for label, path in order:
            runs[label] = _import(url, path, workdir)
            progress(
                f"{backend:10} import {label:20} {runs[label]['rows_per_second']:>9,} rows/s, "
                f"peak {runs[label]['peak_rss_bytes'] >> 20} MiB ({runs[label]['summary']})"
            )
        assert _tasks(url) == rows, "every row became one metadata task"
        results[backend] = {
            "floor": floor,
            **runs,
            "small": small_run,
            "new_vs_floor": round(runs["new"]["rows_per_second"] / floor["rows_per_second"], 3),
            "rss_ratio_large_to_small": round(runs["new"]["peak_rss_bytes"] / small_run["peak_rss_bytes"], 3),
        }
    return results
