"""Coordinator throughput over real HTTP: tasks leased and completed per second.

The real coordinator (auth, validation, everything) and the ceiling app (the same
lease/complete statements, nothing else) run under the same gunicorn settings and the
same load generator: wrk, one connection per thread, each looping lease -> submit. The
CPU time of wrk and of the server is recorded too, so a saturated generator would show.
RQ on the local Redis, end to end, is what a Python user would pick instead.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from support.proc import cpu_seconds, machine_busy, tree
from support.processes import REPO_ROOT, VENV_BIN, coordinator_env, free_port, start_server

from . import fill

LUA = REPO_ROOT / "bench" / "lease_submit.lua"
APPS = {
    "real": "server:create_app()",
    "ceiling": "bench.ceiling_app:create_app()",
    "ceiling_all": "bench.ceiling_app:create_app(every_statement=True)",
}
#: gunicorn sync workers per backend: SQLite has one writer, PostgreSQL uses more.
WORKERS = {"sqlite": 2, "postgresql": 4}
#: The configuration the targets name: 16 connections, batch 100.
TARGET = (16, 100)


@dataclass
class Run:
    backend: str
    app: str
    connections: int
    batch: int
    seconds: float
    tasks: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    wrk_cpu: float  # CPU seconds per second of run (cores)
    server_cpu: float
    machine_busy: float  # fraction of all cores

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "tasks_per_second": round(self.tasks_per_second, 1),
            "requests_per_second": round(self.requests / self.seconds, 1),
        }


def database(backend: str, workdir: Path, pg_server: str, name: str) -> str:
    if backend == "sqlite":
        path = workdir / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    return fill.fresh_postgres(pg_server, name)


def start_wrk(url: str, key: str, connections: int, batch: int, seconds: float) -> subprocess.Popen:
    command = [
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
        "--",
        key,
        fill.BENCH_SITE,
        str(batch),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return process


def _start(app: str, backend: str, url: str, workdir: Path, label: str | None = None, **env: str):
    port = free_port()
    config = workdir / "coordinator_config.py"
    config.write_text("")
    return start_server(
        [str(VENV_BIN / "gunicorn"), "--workers", str(WORKERS[backend]), "--bind", f"127.0.0.1:{port}", APPS[app]],
        url=f"http://127.0.0.1:{port}",
        ready_path="/health" if app == "real" else "/leases",
        log_path=workdir / f"gunicorn-{label or app}-{backend}.log",
        env=coordinator_env(url, fill.SITES, config) | env,
    )


def measure(app: str, backend: str, url: str, key: str, workdir: Path, plan, progress) -> list[Run]:
    """Every configuration of the plan, the target one ``plan.repeats`` times; the
    every-statement ceiling only answers how far the target configuration can go."""
    server = _start(app, backend, url, workdir)
    runs = []
    configurations = [TARGET] if app == "ceiling_all" else [(c, b) for c in plan.connections for b in plan.batches]
    try:
        for connections, batch in configurations:
            repeats = plan.repeats if (connections, batch) == TARGET else 1
            for _ in range(repeats):
                needed = int(plan.max_rate * plan.seconds * 1.5) + 1000
                if fill.queued(url) < needed:
                    fill.fill(url, needed)
                runs.append(_one_run(server, app, backend, key, connections, batch, plan.seconds))
                progress(
                    f"{backend:10} {app:11} c={connections:<2} b={batch:<3} {runs[-1].tasks_per_second:9.0f} tasks/s"
                )
    finally:
        server.stop()
    return runs


def _one_run(server, app, backend, key, connections, batch, seconds) -> Run:
    server_pids = tree(server.process.pid)
    busy0, total0 = machine_busy()
    server0 = cpu_seconds(server_pids)
    started = time.monotonic()
    process = start_wrk(server.url, key, connections, batch, seconds)
    wrk_cpu = 0.0
    while process.poll() is None:
        wrk_cpu = max(wrk_cpu, cpu_seconds([process.pid]))
        time.sleep(0.1)
    output = process.stdout.read()
    elapsed = time.monotonic() - started
    busy1, total1 = machine_busy()
    line = next((line for line in output.splitlines() if line.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}\n{server.log()[-2000:]}")
    result = json.loads(line.split(" ", 1)[1])
    duration = result["duration_us"] / 1e6
    return Run(
        backend,
        app,
        connections,
        batch,
        duration,
        result["completed"],
        result["requests"],
        result["errors"] + result["socket_errors"],
        result["p50_ms"],
        result["p99_ms"],
        round(wrk_cpu / elapsed, 3),
        round((cpu_seconds(server_pids) - server0) / elapsed, 3),
        round((busy1 - busy0) / max(total1 - total0, 1), 3),
    )


def kept_counts(backend: str, workdir: Path, plan, progress) -> dict:
    """The real coordinator, and the same code with its kept counts switched off, in turn
    at the target configuration: what keeping /stats' counts costs the hot path."""
    servers, keys, urls = {}, {}, {}
    for variant in ("with", "without"):
        urls[variant] = database(backend, workdir, plan.pg_server, f"ff_bench_counts_{variant}")
        keys[variant] = fill.prepare(urls[variant])
        switch = {"FETCHFLEET_BENCH_WITHOUT_COUNTS": "1"} if variant == "without" else {}
        servers[variant] = _start("real", backend, urls[variant], workdir, f"counts-{variant}", **switch)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for turn in range(plan.counts_repeats):
            for variant in ("with", "without") if turn % 2 == 0 else ("without", "with"):
                needed = int(plan.max_rate * plan.seconds * 1.5) + 1000
                if fill.queued(urls[variant]) < needed:
                    fill.fill(urls[variant], needed)
                run = _one_run(servers[variant], "real", backend, keys[variant], *TARGET, plan.seconds)
                rates[variant].append(round(run.tasks_per_second, 1))
                progress(f"{backend:10} kept counts {variant:7} {run.tasks_per_second:9.0f} tasks/s")
    finally:
        for server in servers.values():
            server.stop()
    ratio = statistics.median(rates["with"]) / statistics.median(rates["without"])
    return {"backend": backend, "with": rates["with"], "without": rates["without"], "ratio": round(ratio, 3)}


LEAN_TABLE = (
    "CREATE TABLE tasks (id {pk}, kind TEXT, site TEXT, url TEXT, state TEXT, priority INT, "
    "available_at {time}, lease_id TEXT, leased_at {time}, updated_at {time}, done_at {time}, result_lease_id TEXT)"
)


def lean_database(backend: str, workdir: Path, pg_server: str, count: int) -> str:
    """A minimal tasks table (no item, payload, error or file columns; only the queue
    index): what the ceiling app does on it shows the limit of HTTP on this machine."""
    from sqlalchemy import create_engine, text

    url = database(backend, workdir, pg_server, "ff_bench_lean")
    sqlite = backend == "sqlite"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                LEAN_TABLE.format(
                    pk="INTEGER PRIMARY KEY" if sqlite else "BIGSERIAL PRIMARY KEY",
                    time="TEXT" if sqlite else "TIMESTAMPTZ",
                )
            )
        )
        connection.execute(
            text("CREATE INDEX ix_lean_queue ON tasks (kind, site, priority DESC, id) WHERE state = 'queued'")
        )
    engine.dispose()
    _fill_lean(url, count)
    return url


def _fill_lean(url: str, count: int) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    stamp = "2020-01-01 00:00:00.000000" if url.startswith("sqlite") else "2020-01-01T00:00:00+00:00"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tasks (kind, site, url, state, priority, available_at) "
                "VALUES ('download', :site, :url, 'queued', 0, :stamp)"
            ),
            [{"site": fill.BENCH_SITE, "url": f"http://bench.test/{n}", "stamp": stamp} for n in range(count)],
        )
    engine.dispose()


def lean_ceiling(backend: str, workdir: Path, plan, progress) -> dict:
    url = lean_database(backend, workdir, plan.pg_server, int(plan.max_rate * plan.seconds * 1.5) + 1000)
    port = free_port()
    server = start_server(
        [
            str(VENV_BIN / "gunicorn"),
            "--workers",
            str(WORKERS[backend]),
            "--bind",
            f"127.0.0.1:{port}",
            APPS["ceiling"],
        ],
        url=f"http://127.0.0.1:{port}",
        ready_path="/leases",
        log_path=workdir / f"gunicorn-lean-{backend}.log",
        env={"FETCHFLEET_DATABASE_URL": url},
    )
    try:
        run = _one_run(server, "lean ceiling", backend, "-", 16, 100, plan.seconds)
    finally:
        server.stop()
    progress(f"{backend:10} ceiling on a lean table: {run.tasks_per_second:9.0f} tasks/s")
    return run.as_dict()


def database_only(backend: str, url: str, cycles: int) -> dict:
    """The ceiling's two statements, ``cycles`` times 100 tasks, on one connection,
    in-process: no HTTP at all. What the database alone sustains, on the real schema."""
    import secrets
    from datetime import UTC, datetime

    from sqlalchemy import bindparam, create_engine

    from server.database import install_sqlite_behaviour

    from .ceiling_app import COMPLETE, LEASE

    engine = create_engine(url)
    install_sqlite_behaviour(engine)
    complete = COMPLETE.bindparams(bindparam("ids", expanding=True))
    sqlite = engine.dialect.name == "sqlite"
    tasks = 0
    started = time.monotonic()
    for _ in range(cycles):
        now = datetime.now(UTC)
        now = now.replace(tzinfo=None).isoformat(" ") if sqlite else now
        lease = secrets.token_urlsafe(32)
        with engine.begin() as connection:
            ids = [
                row.id
                for row in connection.execute(
                    LEASE[engine.dialect.name], {"site": fill.BENCH_SITE, "n": 100, "now": now, "lease": lease}
                )
            ]
        with engine.begin() as connection:
            tasks += len(connection.execute(complete, {"ids": ids, "lease": lease, "now": now}).all())
    elapsed = time.monotonic() - started
    engine.dispose()
    return {"backend": backend, "tasks_per_second": round(tasks / elapsed, 1), "cycles": cycles}


#: An event destination for the events-on run: the outbox is written, nothing is sent.
EVENTS_ON = {"EVENTS_WEBHOOKS": [{"url": "http://127.0.0.1:9/bench", "secret": "bench-secret-0123456789"}]}


def domain_only(backend: str, url: str, cycles: int, *, events: bool = False) -> dict:
    """fetchfleet's own lease and submit functions (every statement and file record, the
    per-result checks), ``cycles`` times 100 tasks, in-process on one connection: what the
    coordinator costs without HTTP, key check, JSON Schema validation or JSON, wall and
    CPU per 100-task cycle. ``events``: with an event destination configured (each done
    download writes its ``file.downloaded`` event to the outbox in its transaction)."""
    from sqlalchemy import select

    from server import context, create_app
    from server.extensions import db
    from server.leasing import lease_tasks, submit_results
    from server.models import ApiKey

    app = create_app({"DATABASE_URL": url, "SITES": fill.SITES, **(EVENTS_ON if events else {})})
    tasks = 0
    with app.app_context():
        client = db.session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).first()
        db.session.commit()
        sites, policy, outbox = context.sites(), context.policy(), context.events()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(cycles):
            grant = lease_tasks(
                db.session,
                client=client,
                kind="download",
                n=100,
                site=fill.BENCH_SITE,
                sites=sites,
                policy=policy,
                events=outbox,
            )
            results = [
                {"task_id": task["id"], "status": "done", "files": [fill.file_record(task["id"])]}
                for task in grant.tasks
            ]
            outcome = submit_results(
                db.session,
                lease_id=grant.lease.id,
                client=client,
                results=results,
                sites=sites,
                policy=policy,
                events=outbox,
            )
            tasks += len(outcome.accepted)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db.session.remove()
        db.engine.dispose()
    return {
        "backend": backend,
        "events": events,
        "tasks_per_second": round(tasks / wall, 1),
        "cycles": cycles,
        "cpu_ms_per_cycle": round(1000 * cpu / cycles, 3),
    }


def rq_rate(jobs: int, workers: int = 2) -> dict:
    """RQ 2.x on the local Redis: enqueue ``jobs`` trivial jobs, run SimpleWorker processes
    in burst mode until the queue is empty; jobs per second end to end."""
    from redis import Redis
    from rq import Queue

    from .rq_jobs import noop

    queue = Queue("fetchfleet-bench", connection=Redis())
    queue.empty()
    started = time.perf_counter()
    queue.enqueue_many([Queue.prepare_data(noop, (n,), result_ttl=0) for n in range(jobs)])
    enqueued = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rq.cli",
                "worker",
                "--burst",
                "--quiet",
                "--worker-class",
                "rq.worker.SimpleWorker",
                "fetchfleet-bench",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.wait(600)
    finished = time.perf_counter()
    left = len(queue)
    return {
        "jobs": jobs,
        "workers": workers,
        "left_in_queue": left,
        "enqueue_per_second": round(jobs / (enqueued - started), 1),
        "end_to_end_per_second": round(jobs / (finished - started), 1),
    }


def run(plan, workdir: Path, progress) -> dict:
    results: dict = {
        "runs": [],
        "workers": WORKERS,
        "lean_ceiling": [],
        "database_only": [],
        "domain_only": [],
        "domain_only_events": [],
        "kept_counts": [],
    }
    for backend in plan.backends:
        urls = {}
        for app in APPS:
            url = urls[app] = database(backend, workdir, plan.pg_server, f"ff_bench_{app}")
            key = fill.prepare(url)
            runs = measure(app, backend, url, key, workdir, plan, progress)
            results["runs"] += [r.as_dict() for r in runs]
        for app in ("real", "ceiling"):
            fill.fill(urls[app], plan.database_cycles * 100 + 1000)
        results["database_only"].append(database_only(backend, urls["ceiling"], plan.database_cycles))
        progress(f"{backend:10} database only: {results['database_only'][-1]['tasks_per_second']:9.0f} tasks/s")
        # events off and on, alternating, each on tasks of its own: the ratio is of one moment
        for events in (False, True, False, True):
            fill.fill(urls["real"], plan.database_cycles * 100 + 1000)
            row = domain_only(backend, urls["real"], plan.database_cycles, events=events)
            results["domain_only_events" if events else "domain_only"].append(row)
            label = "with events" if events else ""
            progress(f"{backend:10} fetchfleet without HTTP {label}: {row['tasks_per_second']:9.0f} tasks/s")
        results["lean_ceiling"].append(lean_ceiling(backend, workdir, plan, progress))
        results["kept_counts"].append(kept_counts(backend, workdir, plan, progress))
    results["rq"] = rq_rate(plan.rq_jobs)
    progress(f"rq end to end {results['rq']['end_to_end_per_second']:.0f} jobs/s")
    return results
