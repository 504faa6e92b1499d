"""Run every benchmark and write ``bench/results/latest.json`` and ``latest.md``.

    python -m bench            # the full run (`make bench`; the README says how long it takes)
    python -m bench --smoke    # tiny sizes: checks that every figure is produced (CI)
    python -m bench --render   # rewrite latest.md and the README block from latest.json
    python -m bench --only inventory --output /tmp/again
    python -m bench --merge /tmp/again   # its sections replace the full run's, named as re-run

Ratios are measured side by side in one run: the machines are noisy, absolute numbers
from different runs do not compare.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import click

from support.processes import REPO_ROOT

from . import catalogue, file_store, inventory, memory, pipeline, report, scaling, throughput, video

SECTIONS = ("throughput", "scaling", "inventory", "pipeline", "video", "memory", "catalogue", "file_store")


@dataclass
class Plan:
    backends: tuple[str, ...] = ("sqlite", "postgresql")
    pg_server: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    seconds: float = 6
    connections: tuple[int, ...] = (1, 4, 16)
    batches: tuple[int, ...] = (1, 10, 100)
    repeats: int = 3  # of the target configuration (16 connections, batch 100): median
    #: runs of each side of the kept counts' cost, alternating: a few points between
    #: them is the figure, and three runs of a side spread by up to 20% here
    counts_repeats: int = 5
    max_rate: int = 30_000  # tasks/s to keep queued for, per second of run
    rq_jobs: int = 20_000
    database_cycles: int = 1000  # of 100 tasks, for the database-only figure
    queue_sizes: tuple[int, ...] = (10_000, 1_000_000, 10_000_000)
    scaling_leases: int = 300
    stats_requests: int = 200
    move_size: int = 1_000_000  # the SQLite database is moved to PostgreSQL at this size
    import_rows: int = 1_000_000
    subscription_sizes: tuple[int, ...] = (1_000, 100_000)
    files: int = 1000
    latency: float = 0.05
    image_size: int | None = 320
    videos: int = 20  # HLS streams of the demo site, against plain yt-dlp
    video_turns: int = 5  # alternating which goes first: medians
    memory_tasks: int = 1_000_000
    similar_sizes: tuple[int, ...] = (1_000_000, 10_000_000)
    similar_queries: int = 200  # per distance, in-process
    sql_queries: int = 10  # per distance: the SQL scan is slow
    endpoint_requests: int = 200
    lookup_sizes: tuple[int, ...] = (10_000, 1_000_000)
    known_rounds: int = 30
    store_pairs: int = 2  # interleaved runs with the file store off, then on
    quiet_seconds: float = 120  # longest wait for an idle machine before in-process timings
    extra: dict = field(default_factory=dict)


SMOKE = Plan(
    seconds=1,
    repeats=1,
    counts_repeats=1,
    max_rate=3000,
    rq_jobs=200,
    database_cycles=100,
    queue_sizes=(1_000, 2_000, 5_000),
    scaling_leases=10,
    stats_requests=10,
    move_size=2_000,
    import_rows=5_000,
    subscription_sizes=(100, 1_000),
    files=16,
    latency=0.01,
    videos=4,
    video_turns=1,
    memory_tasks=5_000,
    similar_sizes=(10_000,),
    similar_queries=10,
    sql_queries=2,
    endpoint_requests=10,
    lookup_sizes=(1_000, 5_000),
    known_rounds=4,
    store_pairs=1,
    quiet_seconds=2,
)


def environment() -> dict:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip(),
        "packages": {
            name: version(name) for name in ("flask", "sqlalchemy", "gunicorn", "gallery_dl", "rq", "psycopg")
        },
    }


DEFAULT_OUTPUT = REPO_ROOT / "bench" / "results"
README = REPO_ROOT / "README.md"


@click.command()
@click.option("--smoke", is_flag=True, help="Tiny sizes: checks the harness produces every figure.")
@click.option("--only", multiple=True, type=click.Choice(SECTIONS), help="Run only these sections.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT,
    show_default=True,
)
@click.option("--keep-workdir", is_flag=True, help="Keep databases and downloads for inspection.")
@click.option("--render", is_flag=True, help="Run nothing: rewrite latest.md (and the README block) from latest.json.")
@click.option(
    "--merge",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run nothing: the sections of DIRECTORY/latest.json (a run with --only) replace those of the "
    "--output results, named in the table as re-run alone; then render.",
)
def main(
    smoke: bool, only: tuple[str, ...], output: Path, keep_workdir: bool, render: bool, merge: Path | None
) -> None:
    """Run the fetchfleet benchmarks and write results (JSON and a markdown table).

    A full run into the default folder also rewrites the README's benchmark block.
    """
    if render or merge:
        results = _load(output / "latest.json")
        if merge:
            _merge(results, _load(merge / "latest.json"))
        results["targets"] = report.targets(results)
    else:
        results = _run(smoke, only, keep_workdir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (output / "latest.md").write_text(report.markdown(results))
    click.echo((output / "latest.md").read_text())
    click.echo(f"results in {output}", err=True)
    complete = not results.get("smoke") and all(name in results for name in SECTIONS)
    if complete and output.resolve() == DEFAULT_OUTPUT.resolve() and report.update_readme(README, results):
        click.echo(f"benchmark block of {README} updated", err=True)
    sys.exit(0)


def _load(source: Path) -> dict:
    if not source.is_file():
        raise click.ClickException(f"{source} does not exist: run the benchmarks first")
    try:
        return json.loads(source.read_text())
    except ValueError as problem:
        raise click.ClickException(f"{source} is not a benchmark result: {problem}") from None


def _merge(results: dict, again: dict) -> None:
    """The sections ``again`` ran replace those of ``results``; the table's date line names
    each, with its commit and date (its figures are not from the full run's hour)."""
    if again.get("smoke"):
        raise click.ClickException("that is a --smoke run: its sizes are not comparable")
    ran = again.get("environment", {}).get("section_seconds", {})
    if not ran or any(name not in again for name in ran):
        raise click.ClickException("that run holds no finished section to merge")
    environment = again["environment"]
    for name, seconds in ran.items():
        results[name] = again[name]
        run = {"commit": environment.get("commit"), "date": environment.get("date"), "seconds": seconds}
        results["environment"].setdefault("reruns", {})[name] = run


def _run(smoke: bool, only: tuple[str, ...], keep_workdir: bool) -> dict:
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    plan = SMOKE if smoke else Plan()
    workdir = Path(tempfile.mkdtemp(prefix="fetchfleet-bench-"))
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.0f}s] {message}", err=True)

    results = {"plan": asdict(plan), "smoke": smoke, "environment": environment()}
    try:
        for name in only or SECTIONS:
            section = {
                "throughput": throughput,
                "scaling": scaling,
                "inventory": inventory,
                "pipeline": pipeline,
                "video": video,
                "memory": memory,
                "catalogue": catalogue,
                "file_store": file_store,
            }[name]
            progress(f"== {name}")
            section_dir = workdir / name
            section_dir.mkdir()
            begun = time.monotonic()
            results[name] = section.run(plan, section_dir, progress)
            # what each section costs of the run's time (``make bench`` has a budget)
            results["environment"].setdefault("section_seconds", {})[name] = round(time.monotonic() - begun)
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = report.targets(results)
    return results


if __name__ == "__main__":
    main()
