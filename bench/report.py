"""Targets and the markdown table of a benchmark run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

TARGET_CONFIG = (16, 100)
ABSOLUTE = {"sqlite": 40_000, "postgresql": 25_000}


def _runs(results: dict, backend: str, app: str, connections: int, batch: int) -> list[dict]:
    """The throughput runs of one configuration (the target one is repeated)."""
    return [
        run
        for run in results.get("throughput", {}).get("runs", [])
        if (run["backend"], run["app"], run["connections"], run["batch"]) == (backend, app, connections, batch)
    ]


def rate(results: dict, backend: str, app: str, connections: int, batch: int) -> float | None:
    rates = [run["tasks_per_second"] for run in _runs(results, backend, app, connections, batch)]
    return statistics.median(rates) if rates else None


def cycle_cpu(results: dict, backend: str, app: str, connections: int = 16, batch: int = 100) -> dict | None:
    """CPU milliseconds per ``batch``-task cycle (lease + submit) of the server and of wrk,
    medians over the runs of one configuration: ``cores`` seconds of CPU per second is all
    there is, so at this cost the rate cannot pass ``cores / CPU per cycle`` (on PostgreSQL
    the database server's own CPU is not counted: its bound is looser still)."""
    runs = [run for run in _runs(results, backend, app, connections, batch) if run["tasks_per_second"] > 0]
    if not runs:
        return None
    cycles = [run["tasks_per_second"] / batch for run in runs]
    server = statistics.median(1000 * run["server_cpu"] / per for run, per in zip(runs, cycles, strict=True))
    wrk = statistics.median(1000 * run["wrk_cpu"] / per for run, per in zip(runs, cycles, strict=True))
    cores = results.get("environment", {}).get("cpus") or 1
    return {
        "server_ms": round(server, 2),
        "wrk_ms": round(wrk, 2),
        "at_most_tasks_per_second": round(cores * 1000 / (server + wrk) * batch),
    }


def _row_of(rows: list[dict], backend: str) -> dict | None:
    """The row for ``backend`` of a per-backend figure (lean ceiling, database only...)."""
    return next((row for row in rows if row["backend"] == backend), None)


def _of_backend(rows: list[dict], backend: str) -> float | None:
    """tasks/s of the row for ``backend``, if measured."""
    row = _row_of(rows, backend)
    return None if row is None else row["tasks_per_second"]


def targets(results: dict) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, wanted: str, met: bool | None, note: str = "") -> None:
        rows.append({"target": name, "measured": measured, "wanted": wanted, "met": met, "note": note})

    throughput = results.get("throughput")
    if throughput:
        rq = throughput["rq"]["end_to_end_per_second"]
        for backend, floor in ABSOLUTE.items():
            real = rate(results, backend, "real", *TARGET_CONFIG)
            ceiling = rate(results, backend, "ceiling", *TARGET_CONFIG)
            if real is None or ceiling is None:
                continue
            lean = _of_backend(throughput.get("lean_ceiling", []), backend)
            every = rate(results, backend, "ceiling_all", *TARGET_CONFIG)
            note = ""
            if real < floor:
                note = _against_floor(results, backend, floor, ceiling, every, lean)
            add(f"{backend}: tasks/s, 16 connections, batch 100", round(real), f">= {floor:,}", real >= floor, note)
            add(
                f"{backend}: share of the ceiling (same run)",
                round(real / ceiling, 3),
                ">= 0.40",
                real / ceiling >= 0.4,
            )
            add(
                f"{backend}: times RQ end to end ({rq:,.0f} jobs/s)",
                round(real / rq, 1),
                ">= 50",
                real / rq >= 50,
                "" if real / rq >= 50 else _against_rq(ceiling, every, lean, rq),
            )
        for backend in ABSOLUTE:
            off = [row["tasks_per_second"] for row in throughput.get("domain_only", []) if row["backend"] == backend]
            on = [
                row["tasks_per_second"] for row in throughput.get("domain_only_events", []) if row["backend"] == backend
            ]
            if off and on:
                ratio = statistics.median(on) / statistics.median(off)
                add(  # in-process: an outbox doubles the rows a submit writes, nothing else hides it
                    f"{backend}: lease + submit with events on / off (in-process, same run)",
                    round(ratio, 3),
                    ">= 0.65",
                    ratio >= 0.65,
                )
        for row in throughput.get("kept_counts", []):
            add(
                f"{row['backend']}: tasks/s with the kept counts / without (16 connections, batch 100, same run)",
                row["ratio"],
                ">= 0.95",
                row["ratio"] >= 0.95,
            )
    scaling = results.get("scaling")
    if scaling:
        for backend, data in scaling.items():
            ratio = data["p50_ratio_largest_to_smallest"]
            sizes = data["sizes"]
            add(
                f"{backend}: lease p50 at {sizes[-1]['queued']:,} / at {sizes[0]['queued']:,} queued",
                ratio,
                "<= 1.5",
                ratio <= 1.5,
            )
            if "stats" in sizes[-1]:
                largest = sizes[-1]["stats"]["p50_ms"]
                add(f"{backend}: /stats p50 ms at {sizes[-1]['queued']:,} tasks", largest, "<= 20", largest <= 20)
                ratio = data["stats_p50_ratio_largest_to_smallest"]
                add(
                    f"{backend}: /stats p50 at {sizes[-1]['queued']:,} / at {sizes[0]['queued']:,} tasks",
                    ratio,
                    "<= 1.5",
                    ratio <= 1.5,
                )
            waiting = data.get("subscriptions")
            if waiting:
                ratio = data["subscriptions_p50_ratio"]
                add(
                    f"{backend}: metadata lease p50 with {waiting[-1]['subscriptions']:,} / "
                    f"{waiting[0]['subscriptions']:,} subscriptions waiting",
                    ratio,
                    "<= 1.5",
                    ratio <= 1.5,
                )
    pipeline = results.get("pipeline")
    if pipeline:
        add(
            "client --jobs 1 / plain gallery-dl (1 process)",
            pipeline["client_1_vs_gallery_dl_1"],
            ">= 0.90",
            pipeline["client_1_vs_gallery_dl_1"] >= 0.9,
        )
        add(
            "client --jobs 8 / plain gallery-dl (8 processes)",
            pipeline["client_8_vs_gallery_dl_8"],
            ">= 0.90",
            pipeline["client_8_vs_gallery_dl_8"] >= 0.9,
        )
    video = results.get("video")
    if video:
        for jobs in (1, 4):
            ratio = video[f"client_{jobs}_vs_yt_dlp_{jobs}"]
            processes = "1 process" if jobs == 1 else f"{jobs} processes"
            add(f"client --jobs {jobs} / plain yt-dlp ({processes}), HLS", ratio, ">= 0.90", ratio >= 0.9)
    _import_targets(results.get("inventory"), add)
    _catalogue_targets(results.get("catalogue"), add)
    store = results.get("file_store")
    if store:
        add(
            f"client --jobs {store['jobs']}, file store on / off ({store['files']:,} files)",
            store["on_vs_off"],
            ">= 0.80",
            store["on_vs_off"] >= 0.8,
        )
        received = store["second_node"]["store_received_bytes"]
        add("the same files from a second node: bytes the store received", received, "0", received == 0)
    return rows


#: Inventory import, new rows per second, by backend (the issue's figures).
IMPORT_NEW = {"sqlite": 100_000, "postgresql": 50_000}
IMPORT_UNCHANGED = 200_000


def _import_targets(inventory: dict | None, add) -> None:
    for backend, data in (inventory or {}).items():
        new, floor = data["new"]["rows_per_second"], data["floor"]["rows_per_second"]
        wanted = IMPORT_NEW.get(backend, 50_000)
        note = "" if new >= wanted else f"the database alone loads these rows at {floor:,}/s (no parsing, no checks)"
        label = f"{backend}: import-csv, new rows/s ({data['new']['rows']:,} rows)"
        add(label, new, f">= {wanted:,}", new >= wanted, note)
        unchanged = data["unchanged"]["rows_per_second"]
        add(
            f"{backend}: import-csv, unchanged rows/s",
            unchanged,
            f">= {IMPORT_UNCHANGED:,}",
            unchanged >= IMPORT_UNCHANGED,
        )
        ratio = data["rss_ratio_large_to_small"]
        add(
            f"{backend}: import-csv peak RSS, {data['new']['rows']:,} / {data['small']['rows']:,} rows",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
        )


#: In-process near-duplicate search targets, distance 8: p50 ms at each size.
SIMILAR_P50_MS = {1_000_000: 2, 10_000_000: 20}


def _catalogue_targets(catalogue: dict | None, add) -> None:
    if not catalogue:
        return
    scans = {row["hashes"]: row for row in catalogue["sql_scan"]}
    for row in catalogue["in_process"]:
        size = row["hashes"]
        at8 = next(d for d in row["distances"] if d["distance"] == 8)
        p50 = at8["index"]["p50_ms"]
        if size in SIMILAR_P50_MS:
            wanted = SIMILAR_P50_MS[size]
            add(f"similar search, {size:,} hashes, distance 8: p50 ms in-process", p50, f"<= {wanted}", p50 <= wanted)
        sql = scans.get(size)
        if sql:
            sql8 = next(d for d in sql["distances"] if d["distance"] == 8)["p50_ms"]
            add(
                f"similar search, {size:,} hashes: times the SQL scan (p50, distance 8)",
                round(sql8 / p50, 1),
                ">= 30",
                sql8 / p50 >= 30,
            )
        per_million = row["bytes_per_million"] / 2**20
        add(
            f"similar index, {size:,} hashes: MiB per million hashes per process",
            round(per_million, 1),
            "<= 20",
            per_million <= 20,
        )
    for row in catalogue["endpoint"]:
        fresh = row["freshness"]["max_seconds"]
        add(f"a new file findable by every worker ({row['hashes']:,} hashes), seconds", fresh, "<= 5", fresh <= 5)
    by_backend: dict[str, list[dict]] = {}
    for row in catalogue["lookups"]:
        by_backend.setdefault(row["backend"], []).append(row)
    for backend, rows in by_backend.items():
        small, large = rows[0], rows[-1]
        for key, label in (("files_by_sha256", "GET /files?sha256="), ("item", "GET /items/<key>")):
            ratio = round(large[key]["p50_ms"] / small[key]["p50_ms"], 2)
            add(
                f"{backend}: {label} p50 at {large['files']:,} / at {small['files']:,} files",
                ratio,
                "<= 1.5",
                ratio <= 1.5,
            )
    for row in catalogue["skip_known"]:
        add(
            f"{row['backend']}: submit of 100 found, half known / none known",
            row["ratio"],
            "<= 1.5",
            row["ratio"] <= 1.5,
        )


def _file_store_table(store: dict | None) -> list[str]:
    if not store:
        return []
    lines = [
        "",
        f"## File store: {store['files']:,} posts, --jobs {store['jobs']}, "
        f"{store['latency_seconds'] * 1000:.0f} ms added to every site request",
        "",
        "Into `--dest` only (off) and also into a real SeaweedFS (on: a HEAD, the file with its SHA-256, its "
        "sidecar), interleaved, each run on a fresh `--dest` and a fresh prefix of the bucket. *received*: bytes "
        "the store counted for the bucket during the run.",
        "",
        "| run | store | seconds | files/s | files | received MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for mode in ("off", "on"):
        for number, run in enumerate(store["runs"][mode], start=1):
            lines.append(
                f"| {number} | {mode} | {run['seconds']:.1f} | {run['files_per_second']:.1f} | {run['files']:,} | "
                f"{run['store_received_bytes'] / 1e6:.2f} |"
            )
    second = store["second_node"]
    lines += [
        "",
        f"Median files/s: off {store['store_off_files_per_second']:.1f}, on {store['store_on_files_per_second']:.1f} "
        f"({store['on_vs_off']:.0%}). A second node fetching the same posts into the prefix the last run filled: "
        f"{second['seconds']:.1f} s, the store received {second['store_received_bytes']:.0f} bytes, objects "
        f"{second['objects_before']:,} before and {second['objects_after']:,} after.",
    ]
    return lines


def _against_floor(
    results: dict, backend: str, floor: int, ceiling: float, every: float | None, lean: float | None
) -> str:
    """Why an absolute target was missed: beyond this machine when an app doing no more
    than fetchfleet's statements (or fewer) stays below it in the same run."""
    bounds = [f"the ceiling app reaches {ceiling:,.0f}"]
    if every is not None:
        bounds.append(f"{every:,.0f} doing every statement fetchfleet does")
    if lean is not None:
        bounds.append(f"{lean:,.0f} on a minimal table")
    if ceiling < floor or (every is not None and every < floor):
        return "beyond this machine: " + ", ".join(bounds)
    note = ", ".join(bounds) + f"; this needs {floor / ceiling:.0%} of the ceiling"
    cpu = cycle_cpu(results, backend, "real")
    if cpu:
        note += (
            f"; fetchfleet's {cpu['server_ms'] + cpu['wrk_ms']:.1f} ms of CPU per 100-task cycle "
            f"(server + wrk) allow at most {cpu['at_most_tasks_per_second']:,} on all cores"
        )
    return note


def _against_rq(ceiling: float, every: float | None, lean: float | None, rq: float) -> str:
    ratios = [f"the ceiling app is {ceiling / rq:.0f}x RQ"]
    if every is not None:
        ratios.append(f"{every / rq:.0f}x doing every statement")
    if lean is not None:
        ratios.append(f"{lean / rq:.0f}x on a minimal table")
    beyond = ceiling / rq < 50 or (every is not None and every / rq < 50)
    return ("beyond this machine: " if beyond else "") + ", ".join(ratios)


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


README_START = "<!-- bench:start (written by python -m bench) -->"
README_END = "<!-- bench:end -->"


def _header(results: dict) -> str:
    env = results["environment"]
    header = (
        f"{env['date']}, commit {env['commit']}, {env['cpus']} cores, Python {env['python']}, SQLite {env['sqlite']}, "
        f"{env['wrk']}. Made by `make bench` (`python -m bench`)."
    )
    if sections := env.get("section_seconds"):
        spent = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in sections.items())
        header += f" Minutes per section: {spent}; {sum(sections.values()) / 60:.1f} in all."
    if reruns := env.get("reruns"):
        again = ", ".join(f"{name} at {run['commit']} ({run['date']})" for name, run in reruns.items())
        header += f" Sections re-run alone since (their figures replace the full run's): {again}."
    return header


def _targets_table(results: dict) -> list[str]:
    lines = ["| target | measured | wanted | met | note |", "| --- | ---: | --- | --- | --- |"]
    for row in results.get("targets", []):
        measured = f"{row['measured']:,}" if isinstance(row["measured"], int | float) else "-"
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {measured} | {row['wanted']} | {met} | {row['note']} |")
    return lines


def _limits_table(results: dict) -> list[str]:
    """fetchfleet at the target configuration beside everything that bounds it."""
    throughput = results.get("throughput")
    if not throughput:
        return []
    lines = [
        "| tasks/s, 16 connections, batch 100 | fetchfleet | fetchfleet without HTTP | ceiling app, every statement "
        "| ceiling app | ceiling app, minimal table | database alone, no HTTP | RQ end to end |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def of(rows: list[dict], backend: str) -> str:
        found = _of_backend(rows, backend)
        return "-" if found is None else f"{found:,.0f}"

    for backend in ABSOLUTE:
        real = rate(results, backend, "real", *TARGET_CONFIG)
        ceiling = rate(results, backend, "ceiling", *TARGET_CONFIG)
        if real is None or ceiling is None:
            continue
        every = rate(results, backend, "ceiling_all", *TARGET_CONFIG)
        lines.append(
            f"| {backend} | {real:,.0f} | {of(throughput.get('domain_only', []), backend)} "
            f"| {'-' if every is None else f'{every:,.0f}'} | {ceiling:,.0f} "
            f"| {of(throughput.get('lean_ceiling', []), backend)} | "
            f"{of(throughput.get('database_only', []), backend)} | {throughput['rq']['end_to_end_per_second']:,.0f} |"
        )
    lines += [
        "",
        "| CPU ms per 100-task cycle (lease + submit) | server (gunicorn; not PostgreSQL's own) | wrk "
        "| all cores allow at most, tasks/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for backend in ABSOLUTE:
        for app, label in (
            ("real", "fetchfleet"),
            ("ceiling_all", "ceiling app, every statement"),
            ("ceiling", "ceiling app"),
        ):
            cpu = cycle_cpu(results, backend, app)
            if cpu:
                lines.append(
                    f"| {backend}, {label} | {cpu['server_ms']:.2f} | {cpu['wrk_ms']:.2f} "
                    f"| {cpu['at_most_tasks_per_second']:,} |"
                )
        domain = _row_of(throughput.get("domain_only", []), backend)
        if domain:
            lines.append(
                f"| {backend}, fetchfleet without HTTP (one process) | {domain['cpu_ms_per_cycle']:.2f} | - | - |"
            )
    return lines


def readme_section(results: dict) -> str:
    """The block between the README's bench markers: the run, its targets, the limits."""
    lines = [README_START, "", _header(results), "", *_targets_table(results)]
    limits = _limits_table(results)
    if limits:
        lines += ["", *limits]
    lines += ["", "All tables: [`bench/results/latest.md`](bench/results/latest.md).", "", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, results: dict) -> bool:
    """Replace the README's bench block with this run's; False if it has no markers."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    readme.write_text(text[:start] + readme_section(results) + text[end + len(README_END) :])
    return True


def markdown(results: dict) -> str:
    lines = [
        "# fetchfleet benchmarks" + (" (smoke run: tiny sizes, numbers mean nothing)" if results.get("smoke") else ""),
        "",
        _header(results),
        "",
        "## Targets",
        "",
        *_targets_table(results),
    ]
    limits = _limits_table(results)
    if limits:
        lines += ["", "## What bounds it", "", *limits]

    throughput = results.get("throughput")
    if throughput:
        lines += [
            "",
            "## Coordinator throughput over HTTP (tasks leased and completed per second)",
            "",
            f"gunicorn sync workers: {throughput['workers']}; load generator: wrk, one connection per thread, each "
            "looping lease N -> submit N done results (with a file record each). *ceiling*: a minimal Flask app doing "
            "the same lease/complete statements, same gunicorn and wrk settings. Target row: median of repeats. "
            "*Every statement*: the ceiling app also doing the rest of what fetchfleet writes and reads per cycle "
            "(expired-lease check, lease row, reading the lease, the file records, ending the lease), still without "
            "auth, validation or ORM.",
            "",
            "| backend | connections | batch | fetchfleet | ceiling | share | p50 / p99 ms | wrk cores "
            "| server cores |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        seen = set()
        for run in throughput["runs"]:
            config = (run["backend"], run["connections"], run["batch"])
            if run["app"] != "real" or config in seen:
                continue
            seen.add(config)
            real = rate(results, *config[:1], "real", *config[1:])
            ceiling = rate(results, *config[:1], "ceiling", *config[1:])
            share = f"{real / ceiling:.0%}" if real and ceiling else "-"
            lines.append(
                f"| {run['backend']} | {run['connections']} | {run['batch']} | {real:,.0f} | "
                f"{ceiling or 0:,.0f} | {share} | {run['p50_ms']:.1f} / {run['p99_ms']:.1f} | "
                f"{run['wrk_cpu']:.2f} | {run['server_cpu']:.2f} |"
            )
        for backend in ABSOLUTE:
            runs = _runs(results, backend, "ceiling_all", *TARGET_CONFIG)
            if runs:
                every = rate(results, backend, "ceiling_all", *TARGET_CONFIG)
                lines.append(
                    f"| {backend} (ceiling app, every statement) | 16 | 100 | - | {every:,.0f} | - | "
                    f"{runs[0]['p50_ms']:.1f} / {runs[0]['p99_ms']:.1f} | {runs[0]['wrk_cpu']:.2f} | "
                    f"{runs[0]['server_cpu']:.2f} |"
                )
        for lean in throughput.get("lean_ceiling", []):
            lines.append(
                f"| {lean['backend']} (ceiling app, minimal table) | 16 | 100 | - | "
                f"{lean['tasks_per_second']:,.0f} | - | {lean['p50_ms']:.1f} / {lean['p99_ms']:.1f} | "
                f"{lean['wrk_cpu']:.2f} | {lean['server_cpu']:.2f} |"
            )
        floors = ", ".join(
            f"{row['backend']} {row['tasks_per_second']:,.0f}" for row in throughput.get("database_only", [])
        )
        if floors:
            lines += [
                "",
                f"The database alone (the ceiling's two statements in a loop on one connection, in-process, no "
                f"HTTP), tasks/s: {floors}.",
            ]
        domains = ", ".join(
            f"{row['backend']} {row['tasks_per_second']:,.0f} ({row['cpu_ms_per_cycle']:.2f} ms of CPU per cycle)"
            for row in throughput.get("domain_only", [])
        )
        if domains:
            lines += [
                "",
                "fetchfleet without HTTP (its lease and submit functions, every statement and file record, in a loop "
                f"on one connection, in-process), tasks/s: {domains}.",
            ]
        rq = throughput["rq"]
        lines += [
            "",
            f"RQ {rq['workers']} burst SimpleWorker processes on the local Redis, {rq['jobs']:,} trivial jobs: "
            f"{rq['end_to_end_per_second']:,.0f} jobs/s end to end (enqueue alone {rq['enqueue_per_second']:,.0f}/s).",
        ]

    kept = (throughput or {}).get("kept_counts", [])
    if kept:
        lines += [
            "",
            "## What the kept counts cost (16 connections, batch 100, alternating runs)",
            "",
            "| backend | tasks/s with | tasks/s without | ratio (medians) |",
            "| --- | --- | --- | ---: |",
        ]
        for row in kept:
            with_, without = ", ".join(f"{v:,.0f}" for v in row["with"]), ", ".join(f"{v:,.0f}" for v in row["without"])
            lines.append(f"| {row['backend']} | {with_} | {without} | {row['ratio']} |")

    scaling = results.get("scaling")
    if scaling:
        lines += [
            "",
            "## Lease and /stats latency against the size of the archive",
            "",
            "100-task lease in-process; `GET /stats` through the app (no socket); the recount is one count of the "
            "tables, what /stats did before it read kept counts.",
            "",
            "| backend | tasks | lease p50 ms | lease p99 ms | /stats p50 ms | /stats p99 ms | a recount, s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for backend, data in scaling.items():
            for row in data["sizes"]:
                stats = row.get("stats", {})
                lines.append(
                    f"| {backend} | {row['queued']:,} | {row['p50_ms']} | {row['p99_ms']} | {stats.get('p50_ms', '-')} "
                    f"| {stats.get('p99_ms', '-')} | {row.get('recount_seconds', '-')} |"
                )
        for backend, data in scaling.items():
            moved = data.get("move_to_postgresql")
            if moved:
                lines += [
                    "",
                    f"`flask move-to` of the {backend} database at {data['sizes'][1]['queued']:,} tasks into a new "
                    f"PostgreSQL database: {moved['rows']:,} rows in {moved['seconds']} s with the comparison of "
                    f"both, peak RSS {_mib(moved['peak_rss_bytes'])}.",
                ]
        lines += [
            "",
            "Metadata lease (100 tasks) beside subscriptions waiting for their next check (spread over a day, "
            "outside the queue), 5,000 items queued:",
            "",
            "| backend | subscriptions waiting | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: |",
        ]
        for backend, data in scaling.items():
            for row in data.get("subscriptions", []):
                lines.append(f"| {backend} | {row['subscriptions']:,} | {row['p50_ms']} | {row['p99_ms']} |")

    pipeline = results.get("pipeline")
    if pipeline:
        lines += [
            "",
            f"## Client pipeline: {pipeline['files']:,} posts, {pipeline['latency_seconds'] * 1000:.0f} ms added to "
            "every request",
            "",
            "| variant | files/s | seconds | files |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key, label in (
            ("gallery_dl_1", "plain gallery-dl, 1 process"),
            ("gallery_dl_8", "plain gallery-dl, 8 processes x 1/8 of the URLs"),
            ("client_1", "python -m client download --jobs 1"),
            ("client_8", "python -m client download --jobs 8"),
        ):
            row = pipeline[key]
            lines.append(f"| {label} | {row['files_per_second']} | {row['seconds']} | {row['files']} |")
        lines += [
            "",
            f"8 plain processes vs 1: {pipeline['gallery_dl_8_vs_1']}x. The client also hashes every file "
            "(sha256, phash, dhash), writes its sidecar and reports to the coordinator.",
        ]

    video = results.get("video")
    if video:
        medians = video["median_seconds"]
        lines += [
            "",
            f"## Video: {video['videos']} HLS streams (720p video + separate audio, merged by ffmpeg)",
            "",
            f"Medians of {video['turns']} alternating turns.",
            "",
            "| variant | seconds | videos/s |",
            "| --- | ---: | ---: |",
        ]
        for key, label in (
            ("plain_1", "plain yt-dlp, 1 process"),
            ("client_1", "python -m client download --jobs 1"),
            ("plain_4", "plain yt-dlp, 4 processes x 1/4 of the URLs"),
            ("client_4", "python -m client download --jobs 4"),
        ):
            lines.append(f"| {label} | {medians[key]} | {video['videos'] / medians[key]:.2f} |")
        lines += [
            "",
            "The client also leases each video, probes (PyAV), hashes and writes a sidecar for each file, "
            "and reports to the coordinator.",
        ]

    inventory = results.get("inventory")
    if inventory:
        lines += [
            "",
            "## Inventory import (`flask import-csv`, the whole process)",
            "",
            "| backend | file | rows/s | seconds | peak RSS |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for backend, data in inventory.items():
            for key, label in (
                ("small", "new rows (smaller file)"),
                ("new", "new rows"),
                ("unchanged", "the same file again"),
                ("changed_10_percent", "every tenth row changed"),
            ):
                row = data[key]
                lines.append(
                    f"| {backend} | {label}, {row['rows']:,} rows | {row['rows_per_second']:,} | {row['seconds']} "
                    f"| {_mib(row['peak_rss_bytes'])} |"
                )
            floor = data["floor"]
            lines.append(
                f"| {backend} | the database alone: the same items and tasks, bulk-loaded | "
                f"{floor['rows_per_second']:,} | {floor['seconds']} | - |"
            )

    lines += _catalogue_tables(results.get("catalogue"))
    lines += _file_store_table(results.get("file_store"))

    memory = results.get("memory")
    pipeline_memory = (results.get("pipeline") or {}).get("client_8", {}).get("peak_rss_bytes")
    if memory or pipeline_memory:
        lines += ["", "## Memory", ""]
        for backend, data in (memory or {}).items():
            workers = ", ".join(_mib(value) for value in data["worker_rss_bytes"])
            lines.append(
                f"- coordinator on {backend}, {data['queued_tasks']:,} tasks queued: master "
                f"{_mib(data['master_rss_bytes'])}, workers {workers} (total {_mib(data['total_rss_bytes'])})"
            )
        if pipeline_memory:
            lines.append(
                f"- client `--jobs 8`: parent {_mib(pipeline_memory['parent'])}, with its 8 workers "
                f"{_mib(pipeline_memory['with_workers'])} at peak"
            )
    return "\n".join(lines) + "\n"


def _catalogue_tables(catalogue: dict | None) -> list[str]:
    if not catalogue:
        return []
    lines = [
        "",
        "## Near-duplicate search (random 64-bit phashes; p50 / p99 ms per query)",
        "",
        "In-process: fetchfleet's index (an exact blocked XOR + popcount scan) beside a numpy scan of the whole "
        "array and the SQL scan a booru writes (`bit_count((h # q)::bit(64)) <= d` over a table of bigints, "
        "PostgreSQL), same run. Endpoint: `GET /files/similar` on gunicorn (2 workers) over PostgreSQL holding "
        "that many file records, over HTTP.",
        "",
        "| hashes | distance | fetchfleet in-process | numpy whole-array scan | SQL scan | endpoint over HTTP |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    scans = {row["hashes"]: row for row in catalogue["sql_scan"]}
    endpoints = {row["hashes"]: row for row in catalogue["endpoint"]}

    def pair(stats: dict | None) -> str:
        return "-" if not stats else f"{stats['p50_ms']:.2f} / {stats['p99_ms']:.2f}"

    for row in catalogue["in_process"]:
        size = row["hashes"]
        for at in row["distances"]:
            sql = next((d for d in scans.get(size, {}).get("distances", []) if d["distance"] == at["distance"]), None)
            http = next(
                (d for d in endpoints.get(size, {}).get("distances", []) if d["distance"] == at["distance"]), None
            )
            lines.append(
                f"| {size:,} | {at['distance']} | {pair(at['index'])} | {pair(at['numpy_scan'])} | {pair(sql)} "
                f"| {pair(http)} |"
            )
    lines.append("")
    if catalogue.get("machine_busy_before") is not None:
        lines.append(f"- the in-process timings began with the machine {catalogue['machine_busy_before']:.0%} busy")
    for row in catalogue["in_process"]:
        lines.append(
            f"- {row['hashes']:,} hashes: the index holds {row['bytes_per_million'] / 2**20:.1f} MiB per million"
        )
    for row in catalogue["endpoint"]:
        growth = row["rss_growth_per_million_bytes"] / 2**20
        lines.append(
            f"- endpoint, {row['hashes']:,} file records: first answer of a worker (reads every hash) "
            f"{row['first_answer_seconds']} s; worker RSS grew {growth:.1f} MiB per million; a file recorded "
            f"elsewhere answered by every worker within {row['freshness']['max_seconds']} s"
        )
    lines += [
        "",
        "## Catalogue lookups over HTTP (p50 / p99 ms)",
        "",
        "| backend | files | GET /files?sha256= | GET /items/<key> |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in catalogue["lookups"]:
        lines.append(f"| {row['backend']} | {row['files']:,} | {pair(row['files_by_sha256'])} | {pair(row['item'])} |")
    lines += [
        "",
        "Metadata submit of 100 found posts, in-process, interleaved: "
        + "; ".join(
            f"{row['backend']} {row['none_known_ms']} ms with none known, {row['half_known_ms']} ms with half known"
            for row in catalogue["skip_known"]
        )
        + ".",
    ]
    return lines
