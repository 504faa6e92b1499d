"""Coordinator throughput over real HTTP: tasks leased and completed per second.

The real coordinator (auth, validation, everything) and the ceiling app (the same
lease/complete statements, nothing else) run under the same gunicorn settings and the
same load generator: wrk, one connection per thread, each looping lease -> submit. The
CPU time of wrk and of the server is recorded too, so a saturated generator would show.
RQ on the local Redis, end to end, is what a Python user would pick instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from demo.processes import REPO_ROOT, VENV_BIN, coordinator_env, free_port, start_server

from . import fill
from .sampling import cpu_seconds, machine_busy, tree

LUA = REPO_ROOT / "bench" / "lease_submit.lua"
APPS = {"real": "server:create_app()", "ceiling": "bench.ceiling_app:create_app()"}
#: gunicorn sync workers per backend: SQLite has one writer, PostgreSQL uses more.
WORKERS = {"sqlite": 2, "postgresql": 4}


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


def measure(app: str, backend: str, url: str, key: str, workdir: Path, plan, progress) -> list[Run]:
    port = free_port()
    config = workdir / "coordinator_config.py"
    config.write_text("")
    server = start_server(
        [str(VENV_BIN / "gunicorn"), "--workers", str(WORKERS[backend]), "--bind", f"127.0.0.1:{port}", APPS[app]],
        url=f"http://127.0.0.1:{port}",
        ready_path="/leases" if app == "ceiling" else "/health",
        log_path=workdir / f"gunicorn-{app}-{backend}.log",
        env=coordinator_env(url, fill.SITES, config),
    )
    runs = []
    try:
        for connections in plan.connections:
            for batch in plan.batches:
                repeats = plan.repeats if (connections, batch) == (16, 100) else 1
                for _ in range(repeats):
                    needed = int(plan.max_rate * plan.seconds * 1.5) + 1000
                    if fill.queued(url) < needed:
                        fill.fill(url, needed)
                    runs.append(_one_run(server, app, backend, key, connections, batch, plan.seconds))
                    progress(
                        f"{backend:10} {app:7} c={connections:<2} b={batch:<3} {runs[-1].tasks_per_second:9.0f} tasks/s"
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
    results: dict = {"runs": [], "workers": WORKERS}
    for backend in plan.backends:
        for app in ("real", "ceiling"):
            url = database(backend, workdir, plan.pg_server, f"ff_bench_{app}")
            key = fill.prepare(url)
            runs = measure(app, backend, url, key, workdir, plan, progress)
            results["runs"] += [r.as_dict() for r in runs]
    results["rq"] = rq_rate(plan.rq_jobs)
    progress(f"rq end to end {results['rq']['end_to_end_per_second']:.0f} jobs/s")
    return results
