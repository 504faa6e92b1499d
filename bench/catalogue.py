"""The archive catalogue: reverse image search, lookups that stay flat as the archive
grows, and what skipping known posts costs a metadata submit.

- Near-duplicate search over N random 64-bit phashes at distances 4, 8 and 12:
  fetchfleet's index in-process, and in the same run the two comparators: a numpy scan
  of the whole array (XOR + popcount in one go) and the SQL scan a booru would write
  (``bit_count((h # q)::bit(64))`` over a table of N bigints, on PostgreSQL). Then the
  real endpoint (gunicorn, 2 workers, PostgreSQL holding N file records): its first
  answer (the build), p50 / p99 after, and the workers' memory per million hashes; and
  how long a file recorded elsewhere takes to be found.
- ``GET /files?sha256=`` and ``GET /items/<key>`` p50 at two archive sizes, both databases.
- A metadata submit of 100 found posts with half of them known anchors against one with
  none known, in-process, interleaved.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import numpy as np
import requests
from sqlalchemy import create_engine, select, text

from server import context, create_app
from server.auth import create_key
from server.extensions import db
from server.inventory import import_inventory
from server.known import import_known
from server.leasing import lease_tasks, submit_results
from server.models import ApiKey, Role
from server.similar import HashIndex
from support.proc import machine_busy, rss_bytes, tree
from support.processes import start_coordinator

from . import fill
from .scaling import percentile
from .throughput import database

DISTANCES = (4, 8, 12)
SITES = {
    fill.BENCH_SITE: {
        "engine": "gallery-dl",
        "url_patterns": [r"^http://bench\.test/"],
        "search_url": "http://bench.test/post?tags={query}",
        "post_url": "http://bench.test/post/{id}",
    }
}


def _stats(values_ms: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(values_ms), 3), "p99_ms": round(percentile(values_ms, 0.99), 3)}


def _queries(hashes: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """Near an existing hash (a few bits flipped) most of the time, random otherwise."""
    queries = []
    for _ in range(count):
        if rng.random() < 0.8:
            value = int(hashes[rng.integers(len(hashes))])
            for bit in rng.choice(64, size=int(rng.integers(0, 6)), replace=False):
                value ^= 1 << int(bit)
        else:
            value = int(rng.integers(0, 2**64, dtype=np.uint64))
        queries.append(value)
    return queries


# ------------------------------------------------------------- in-process


def similar_in_process(size: int, queries: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=size, dtype=np.uint64)
    index = HashIndex("phash")
    index.load(np.arange(1, size + 1, dtype=np.int64), hashes)
    rows = []
    for distance in DISTANCES:
        ours, scan = [], []
        for value in _queries(hashes, queries, rng):
            query = np.uint64(value)
            started = time.perf_counter()
            index.search(value, distance, 100)
            ours.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            np.flatnonzero(np.bitwise_count(hashes ^ query) <= distance)
            scan.append((time.perf_counter() - started) * 1000)
        rows.append({"distance": distance, "index": _stats(ours), "numpy_scan": _stats(scan)})
    return {
        "hashes": size,
        "distances": rows,
        "bytes_per_million": round(index.memory_bytes / size * 1_000_000),
    }


# ------------------------------------------------------------ SQL comparator


def sql_scan(pg_server: str, size: int, queries: int, seed: int = 0) -> dict:
    """A booru's query: every row's hash XOR the query, bits counted, on PostgreSQL."""
    url = fill.fresh_postgres(pg_server, "ff_bench_phash")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE phashes (id bigint PRIMARY KEY, h bigint NOT NULL)"))
        connection.execute(text("SELECT setseed(0.42)"))
        connection.execute(
            text(
                "INSERT INTO phashes SELECT g, ((random() * 4294967295)::bigint << 32) "
                "# (random() * 4294967295)::bigint FROM generate_series(1, :n) g"
            ),
            {"n": size},
        )
        connection.execute(text("ANALYZE phashes"))
    rng = np.random.default_rng(seed)
    with engine.connect() as connection:
        sample = np.array(
            [row[0] for row in connection.execute(text("SELECT h FROM phashes LIMIT 1000"))], dtype=np.int64
        ).view(np.uint64)
        rows = []
        for distance in DISTANCES:
            timings = []
            for value in _queries(sample, queries, rng):
                signed = int(np.uint64(value).view(np.int64))
                started = time.perf_counter()
                connection.execute(
                    text(
                        "SELECT id, bit_count((h # :q)::bit(64)) AS d FROM phashes "
                        "WHERE bit_count((h # :q)::bit(64)) <= :d ORDER BY d, id LIMIT 100"
                    ),
                    {"q": signed, "d": distance},
                ).all()
                timings.append((time.perf_counter() - started) * 1000)
            rows.append({"distance": distance, **_stats(timings)})
    engine.dispose()
    return {"hashes": size, "distances": rows}


# ------------------------------------------------------------------ endpoint


def _fill_catalogue(url: str, files: int, *, items: bool, phash: bool) -> None:
    """``files`` file records (with a download task each and, with ``items``, an item per
    ten tasks linked to them), written by the database itself (a recursive series)."""
    engine = create_engine(url)
    postgresql = engine.dialect.name == "postgresql"
    now = "now()" if postgresql else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    sha = "lpad(n::text, 64, '0')" if postgresql else "printf('%064d', n)"
    random_hash = (
        "lpad(to_hex(((random() * 4294967295)::bigint << 32) # (random() * 4294967295)::bigint), 16, '0')"
        if postgresql
        else "printf('%016x', random())"
    )
    series = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n) "
    if postgresql:
        series = ""
    source = "FROM generate_series(1, :n) AS g(n)" if postgresql else "FROM g"
    with engine.begin() as connection:
        if items:
            connection.execute(
                text(
                    f"INSERT INTO items (id, key, query, sites, priority, extra, content_hash, state, created_at, "
                    f"updated_at) {series}SELECT n, 'q' || n, 'tag' || n, '[\"bench\"]', 0, '{{}}', 'h', 'found', "
                    f"{now}, {now} {source}"
                ),
                {"n": max(1, files // 10)},
            )
            connection.execute(
                text(
                    f"INSERT INTO tasks (id, kind, site, item_id, remote_id, url, state, priority, attempts, "
                    f"available_at, created_at, updated_at) {series}SELECT n, 'download', 'bench', (n - 1) / 10 + 1, "
                    f"CAST(n AS TEXT), 'http://bench.test/post/' || n, 'done', 0, 1, {now}, {now}, {now} {source}"
                ),
                {"n": files},
            )
            connection.execute(
                text(
                    f"INSERT INTO item_posts (item_id, task_id, found_at) {series}"
                    f"SELECT (n - 1) / 10 + 1, n, {now} {source}"
                ),
                {"n": files},
            )
        connection.execute(
            text(
                f"INSERT INTO files (task_id, client_id, path, size, sha256, mime, phash, created_at) {series}"
                f"SELECT n, 1, 'bench/' || n || '.png', 1000, {sha}, 'image/png', "
                f"{random_hash if phash else 'NULL'}, {now} {source}"
            ),
            {"n": files},
        )
        if postgresql:
            connection.execute(text("ANALYZE"))
    engine.dispose()


def _workers(server) -> list[int]:
    return [pid for pid in tree(server.process.pid) if pid != server.process.pid]


def _get(url: str, key: str, params: dict | None = None) -> requests.Response:
    answer = requests.get(url, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=600)
    answer.raise_for_status()
    return answer


def similar_endpoint(plan, workdir: Path, size: int, progress) -> dict:
    url = database("postgresql", workdir, plan.pg_server, "ff_bench_similar")
    key = fill.prepare(url)
    started = time.monotonic()
    _fill_catalogue(url, size, items=False, phash=True)
    progress(f"similar endpoint: {size:,} file records in {time.monotonic() - started:.0f}s")
    server = start_coordinator(url, SITES, workdir, workers=2, SIMILAR_REFRESH_SECONDS=1)
    try:
        endpoint = server.url + "/files/similar"
        rng = np.random.default_rng(1)
        workers = _workers(server)
        # numpy and the code loaded in every worker (the dhash column is empty here)
        _on_every_worker(endpoint, key, {"dhash": "0" * 16, "distance": 0}, len(workers))
        before = {pid: rss_bytes(pid) for pid in workers}
        query = {"phash": f"{int(rng.integers(0, 2**64, dtype=np.uint64)):016x}", "distance": 8}
        first = _on_every_worker(endpoint, key, query, len(workers))  # each worker reads every hash
        after = {pid: rss_bytes(pid) for pid in _workers(server)}
        sample = [
            int(row["phash"], 16)
            for row in _get(server.url + "/files", key, {"limit": 1000}).json()["files"]
            if row["phash"]
        ]
        rows = []
        for distance in DISTANCES:
            timings = []
            for value in _queries(np.array(sample, dtype=np.uint64), plan.endpoint_requests, rng):
                started = time.perf_counter()
                _get(endpoint, key, {"phash": f"{value:016x}", "distance": distance})
                timings.append((time.perf_counter() - started) * 1000)
            rows.append({"distance": distance, **_stats(timings)})
        growth = [after[pid] - before[pid] for pid in after if pid in before]
        freshness = _freshness(url, endpoint, key)
    finally:
        server.stop()
    return {
        "hashes": size,
        "first_answer_seconds": round(max(first), 2),
        "distances": rows,
        "rss_growth_per_million_bytes": round(max(growth) / size * 1_000_000),
        "freshness": freshness,
    }


def _on_every_worker(url: str, key: str, params: dict, workers: int) -> list[float]:
    """The same request to every worker at once (a busy sync worker accepts no other):
    seconds each answer took."""
    from concurrent.futures import ThreadPoolExecutor

    def timed(_):
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
        answer = requests.get(url, params=params, headers=headers, timeout=600)
        answer.raise_for_status()
        return time.perf_counter() - started

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(timed, range(workers)))


def _freshness(url: str, endpoint: str, key: str, rounds: int = 3) -> dict:
    """A file recorded by another host (straight into the database) until both workers
    have answered with it: five answers in a row that list it."""
    engine = create_engine(url)
    seconds = []
    for number in range(rounds):
        value = f"{(0xF0F0F0F0F0F0F0F0 ^ number):016x}"
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO files (task_id, client_id, path, size, sha256, phash, created_at) "
                    "VALUES (:t, 1, :p, 1, :s, :h, now())"
                ),
                {"t": 10**12 + number, "p": f"fresh/{number}", "s": "f" * 64, "h": value},
            )
        started, streak = time.monotonic(), 0
        while streak < 5 and time.monotonic() - started < 30:
            found = _get(endpoint, key, {"phash": value, "distance": 0}).json()["files"]
            streak = streak + 1 if found else 0
            if not found:
                time.sleep(0.05)
        seconds.append(time.monotonic() - started)
    engine.dispose()
    return {"rounds": rounds, "max_seconds": round(max(seconds), 2)}


# ------------------------------------------------------------------- lookups


def lookups(plan, workdir: Path, backend: str, size: int) -> dict:
    url = database(backend, workdir, plan.pg_server, "ff_bench_lookups")
    key = fill.prepare(url)
    _fill_catalogue(url, size, items=True, phash=False)
    server = start_coordinator(url, SITES, workdir, workers=2)
    try:
        rng = np.random.default_rng(2)
        by_hash, by_item = [], []
        for _ in range(20):  # warm-up
            _get(server.url + "/files", key, {"sha256": f"{1:064d}"})
        for _ in range(plan.endpoint_requests):
            n = int(rng.integers(1, size + 1))
            started = time.perf_counter()
            _get(server.url + "/files", key, {"sha256": f"{n:064d}"})
            by_hash.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            _get(server.url + f"/items/q{(n - 1) // 10 + 1}", key)
            by_item.append((time.perf_counter() - started) * 1000)
    finally:
        server.stop()
    return {"backend": backend, "files": size, "files_by_sha256": _stats(by_hash), "item": _stats(by_item)}


# ---------------------------------------------------------------- skip known


def skip_known(plan, workdir: Path, backend: str) -> dict:
    """Submit time of 100 found posts with none known vs half known, interleaved."""
    url = database(backend, workdir, plan.pg_server, "ff_bench_known")
    fill.prepare(url)
    rounds = plan.known_rounds
    app = create_app({"DATABASE_URL": url, "SITES": SITES})
    timings: dict[str, list[float]] = {"none_known": [], "half_known": []}
    with app.app_context():
        client = db.session.scalar(select(ApiKey))
        db.session.commit()
        create_key(db.session, "bench-admin", Role.ADMIN)
        rows = "".join(f"tag{n},bench\n" for n in range(2 * rounds + 10))
        import_inventory(db.session, io.StringIO("query,sites\n" + rows), sites=context.sites())
        known = "".join(f"bench,{100 * n + k}\n" for n in range(2 * rounds + 10) for k in range(50))
        import_known(db.session, io.BytesIO(("site,remote_id\n" + known).encode()), sites=context.sites(), source="b")
        for number in range(2 * rounds):
            case = "half_known" if number % 2 else "none_known"
            grant = lease_tasks(
                db.session, client=client, kind="metadata", n=1, sites=context.sites(), policy=context.policy()
            )
            [task] = grant.tasks
            # round n finds posts 100n..100n+99; anchors name 100n..100n+49 of every round,
            # so the none-known rounds find posts from a range nobody named
            base = 100 * number if case == "half_known" else 10**7 + 100 * number
            found = [{"site": fill.BENCH_SITE, "remote_id": base + k, "metadata": {"id": base + k}} for k in range(100)]
            results = [{"task_id": task["id"], "status": "done", "found": found}]
            started = time.perf_counter()
            submit_results(
                db.session,
                lease_id=grant.lease.id,
                client=client,
                results=results,
                sites=context.sites(),
                policy=context.policy(),
            )
            if number >= 4:  # warm-up excluded
                timings[case].append((time.perf_counter() - started) * 1000)
        db.session.remove()
        db.engine.dispose()
    none, half = (statistics.median(timings[case]) for case in ("none_known", "half_known"))
    return {
        "backend": backend,
        "none_known_ms": round(none, 3),
        "half_known_ms": round(half, 3),
        "ratio": round(half / none, 2),
        "rounds": rounds,
    }


def wait_until_quiet(progress, *, share: float = 0.15, longest: float = 120) -> float:
    """Wait (at most ``longest`` seconds) until the machine is nearly idle: the sections
    before leave PostgreSQL vacuuming and checkpointing what they wrote, and an in-process
    timing taken meanwhile measures that too. Returns the busy share of the last second."""
    started = time.monotonic()
    while True:
        busy0, total0 = machine_busy()
        time.sleep(1)
        busy1, total1 = machine_busy()
        busy = (busy1 - busy0) / max(total1 - total0, 1)
        if busy <= share or time.monotonic() - started > longest:
            progress(f"machine busy {busy:.0%} before the in-process timings")
            return round(busy, 3)


def run(plan, workdir: Path, progress) -> dict:
    results: dict = {"in_process": [], "sql_scan": [], "endpoint": [], "lookups": [], "skip_known": []}
    results["machine_busy_before"] = wait_until_quiet(progress, longest=plan.quiet_seconds)
    for size in plan.similar_sizes:  # first, on a quiet machine: no database work at all
        results["in_process"].append(similar_in_process(size, plan.similar_queries))
        row = results["in_process"][-1]["distances"][1]
        progress(
            f"similar in-process {size:,}: d=8 p50 {row['index']['p50_ms']} ms (numpy {row['numpy_scan']['p50_ms']})"
        )
    for size in plan.similar_sizes:
        results["sql_scan"].append(sql_scan(plan.pg_server, size, plan.sql_queries))
        progress(f"similar SQL scan {size:,}: d=8 p50 {results['sql_scan'][-1]['distances'][1]['p50_ms']} ms")
        results["endpoint"].append(similar_endpoint(plan, workdir, size, progress))
        progress(f"similar endpoint {size:,}: d=8 p50 {results['endpoint'][-1]['distances'][1]['p50_ms']} ms")
    for backend in plan.backends:
        for size in plan.lookup_sizes:
            results["lookups"].append(lookups(plan, workdir, backend, size))
            row = results["lookups"][-1]
            progress(
                f"lookups {backend} {size:,} files: sha256 p50 {row['files_by_sha256']['p50_ms']} ms, "
                f"item p50 {row['item']['p50_ms']} ms"
            )
        results["skip_known"].append(skip_known(plan, workdir, backend))
        progress(f"skip known {backend}: ratio {results['skip_known'][-1]['ratio']}")
    return results
