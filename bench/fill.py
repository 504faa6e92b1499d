"""Benchmark databases: the real schema (migrations), a key, and queues filled fast."""

from __future__ import annotations

import os
import random
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from server import create_app
from server.auth import create_key
from server.cli import init_db
from server.counts import Tally, item_counter, write
from server.extensions import db
from server.models import Role
from support.proc import PeakRss
from support.processes import VENV_BIN, coordinator_env

BENCH_SITE = "bench"
SITES = {BENCH_SITE: {"engine": "gallery-dl", "url_patterns": [r"^http://bench\.test/"]}}
COLUMNS = (
    "kind",
    "site",
    "remote_id",
    "url",
    "state",
    "priority",
    "attempts",
    "available_at",
    "created_at",
    "updated_at",
)


def file_record(task_id: int) -> dict:
    """The file record the load generator sends for each task (``lease_submit.lua``)."""
    return {"path": f"b/{task_id}.png", "size": 1, "sha256": "ab" * 32, "mime": "image/png"}


def fresh_postgres(server_url: str, name: str) -> str:
    """(Re)create database ``name`` on the server of ``server_url``; returns its URL."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def prepare(url: str) -> str:
    """Migrate ``url`` and return a fresh client key for the load generator."""
    app = create_app({"DATABASE_URL": url, "SITES": SITES})
    with app.app_context():
        init_db()
        key = create_key(db.session, f"bench-{random.randrange(10**9)}", Role.CLIENT)
        db.session.remove()
        db.engine.dispose()
    return key


def run_flask(url: str, workdir: Path, *args: str) -> tuple[str, float, int]:
    """One ``flask --app server ARGS`` process against ``url``, as an operator runs it:
    its output, seconds and peak RSS (raises with its output if it fails)."""
    config = workdir / "flask_config.py"
    config.write_text("")
    env = {**os.environ, **coordinator_env(url, SITES, config)}
    started = time.monotonic()
    command = [str(VENV_BIN / "flask"), "--app", "server", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = PeakRss(process.pid)
    peak.start()
    out, err = process.communicate()
    peak.stop()
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"flask {args[0]} failed ({process.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    return out, seconds, peak.peak_total


def add_download_tasks(url: str, site: str, posts: list[tuple[str, str]]) -> None:
    """Queue a download task per (remote id, URL) of ``site``, as found posts become tasks
    (kept counts are left alone: the client benchmarks read no /stats)."""
    engine = create_engine(url)
    stamp = "2020-01-01 00:00:00.000000"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tasks (kind, site, remote_id, url, state, priority, attempts, available_at, created_at, "
                "updated_at) VALUES ('download', :site, :remote_id, :url, 'queued', 0, 0, :t, :t, :t)"
            ),
            [{"site": site, "remote_id": remote_id, "url": post, "t": stamp} for remote_id, post in posts],
        )
    engine.dispose()


def requeue_downloads(url: str) -> None:
    """Every download task queued again, for the next client run over the same posts."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE tasks SET state = 'queued', attempts = 0 WHERE kind = 'download'"))
    engine.dispose()


def queued(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM tasks WHERE state = 'queued'")).scalar()
    engine.dispose()
    return count


def fill(url: str, count: int, *, priorities: int = 1, seed: int = 0) -> None:
    """Queue ``count`` more download tasks of the bench site, with priorities drawn from
    ``range(priorities)`` (1: all equal, the usual case; more: each lease picks rows
    scattered over the table, which costs SQLite a page write per task)."""
    rng = random.Random(seed)
    engine = create_engine(url)
    with engine.connect() as connection:
        start = connection.execute(text("SELECT coalesce(max(id), 0) FROM tasks")).scalar() + 1
    past = datetime.now(UTC) - timedelta(minutes=5)
    sqlite = engine.dialect.name == "sqlite"
    # SQLite gets the text the coordinator's UTCDateTime stores; COPY takes the datetime.
    stamp = past.replace(tzinfo=None).isoformat(" ", timespec="microseconds") if sqlite else past
    rows = (
        ("download", BENCH_SITE, str(n), f"http://bench.test/{n}", "queued", rng.randrange(priorities), 0)
        + (stamp,) * 3
        for n in range(start, start + count)
    )
    _write_rows(engine, [("tasks", COLUMNS, rows)])
    added = Tally()
    added.task_moved("download", BENCH_SITE, None, "queued", count)
    _count(engine, added)


def fill_subscriptions(url: str, subscriptions: int, *, queued: int, seed: int = 0) -> None:
    """Items with a metadata task each: ``subscriptions`` of them checked once and waiting
    for their next check (``scheduled``, due at times spread over the next day), and
    ``queued`` waiting for their first."""
    rng = random.Random(seed)
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    now = datetime.now(UTC)

    def stamp(moment: datetime):
        return moment.replace(tzinfo=None).isoformat(" ", timespec="microseconds") if sqlite else moment

    total = subscriptions + queued
    items = [
        (n, f"bench-{n}", f"tag{n}", '["bench"]', 0, "{}", "h", "pending", stamp(now), stamp(now))
        for n in range(1, total + 1)
    ]
    tasks = []
    for n in range(1, total + 1):
        waiting = n <= subscriptions
        due = now + timedelta(seconds=rng.uniform(60, 86400)) if waiting else now - timedelta(minutes=5)
        tasks.append(
            (
                "metadata",
                BENCH_SITE,
                n,
                f"http://bench.test/post?tags=tag{n}",
                "scheduled" if waiting else "queued",
                0,
                0,
                stamp(due),
                3600 if waiting else None,
                1 if waiting else None,
                stamp(now),
                stamp(now),
            )
        )
    item_columns = (
        "id",
        "key",
        "query",
        "sites",
        "priority",
        "extra",
        "content_hash",
        "state",
        "created_at",
        "updated_at",
    )
    task_columns = (
        "kind",
        "site",
        "item_id",
        "url",
        "state",
        "priority",
        "attempts",
        "available_at",
        "check_every",
        "check_count",
        "created_at",
        "updated_at",
    )
    _write_rows(engine, [("items", item_columns, items), ("tasks", task_columns, tasks)])
    added = Tally()
    added.counters[item_counter("pending")] += total
    added.task_moved("metadata", BENCH_SITE, None, "scheduled", subscriptions)
    added.task_moved("metadata", BENCH_SITE, None, "queued", queued)
    _count(engine, added)


def _count(engine, added: Tally) -> None:
    """What was loaded directly, added to the kept counts (as the coordinator's writes would)."""
    with engine.begin() as connection:
        write(connection, added)
    engine.dispose()


def _write_rows(engine, tables) -> None:
    """(table, columns, rows) in one transaction, as fast as each backend takes them
    (SQLite's executemany, PostgreSQL's COPY), then fresh planner statistics."""
    sqlite = engine.dialect.name == "sqlite"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, columns, rows in tables:
            if sqlite:
                placeholders = ", ".join("?" * len(columns))
                cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)
            else:
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        raw.commit()
    finally:
        raw.close()
    if not sqlite:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE " + ", ".join(table for table, _, _ in tables)))
    engine.dispose()
