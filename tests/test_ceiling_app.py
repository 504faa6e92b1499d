"""The benchmark's every-statement ceiling writes what fetchfleet writes: one lease and one
submit of the same tasks through each leave the same rows behind (tasks, the lease, the
file records), on both databases, so the comparison in ``bench/`` is fair."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import create_engine, make_url, text

from bench import fill
from common.version import CLIENT_VERSION_HEADER, __version__
from server import create_app

TASK_COLUMNS = ("state", "lease_id", "result_lease_id", "done_by", "done_at", "available_at", "attempts", "leased_at")
LEASE_COLUMNS = ("kind", "site", "client_id", "state", "task_count", "seconds", "created_at", "expires_at", "ended_at")
FILE_COLUMNS = ("task_id", "client_id", "path", "size", "sha256", "mime", "phash", "dhash", "created_at")


def database(backend: str, tmp_path, name: str, request) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / name}.sqlite3"
    server = request.getfixturevalue("postgres_url")
    url = fill.fresh_postgres(server, f"{name}_{uuid.uuid4().hex[:12]}")

    def drop() -> None:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        admin.dispose()

    request.addfinalizer(drop)
    return url


def one_cycle(client, key: str, n: int = 10) -> None:
    headers = {"Authorization": f"Bearer {key}", CLIENT_VERSION_HEADER: __version__}
    lease = client.post("/leases", json={"kind": "download", "site": fill.BENCH_SITE, "n": n}, headers=headers)
    assert lease.status_code == 201, lease.get_data(as_text=True)
    tasks = lease.get_json()["tasks"]
    results = [{"task_id": task["id"], "status": "done", "files": [fill.file_record(task["id"])]} for task in tasks]
    answer = client.post(f"/leases/{lease.get_json()['lease_id']}/results", json={"results": results}, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)


def what_was_written(url: str) -> dict:
    """Each table's rows, with values that differ by nature (times, lease ids) as 'set'."""

    def shape(value):
        if isinstance(value, datetime | str) and not isinstance(value, bool) and value is not None:
            return "set" if isinstance(value, datetime) or len(str(value)) > 20 else value
        return value

    engine = create_engine(url)
    with engine.connect() as connection:
        written = {
            "tasks": connection.execute(text(f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks ORDER BY id")).all(),
            "leases": connection.execute(text(f"SELECT {', '.join(LEASE_COLUMNS)} FROM leases")).all(),
            "files": connection.execute(text(f"SELECT {', '.join(FILE_COLUMNS)} FROM files ORDER BY task_id")).all(),
        }
    engine.dispose()
    return {table: [tuple(shape(value) for value in row) for row in rows] for table, rows in written.items()}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_every_statement_ceiling_leaves_the_rows_fetchfleet_leaves(backend, tmp_path, request, monkeypatch):
    from bench import ceiling_app

    urls = {app: database(backend, tmp_path, f"ceiling_{app}", request) for app in ("real", "ceiling")}
    keys = {app: fill.prepare(url) for app, url in urls.items()}
    for url in urls.values():
        fill.fill(url, 15)
    real = create_app({"DATABASE_URL": urls["real"], "SITES": fill.SITES})
    one_cycle(real.test_client(), key=keys["real"])
    with real.app_context():
        from server.extensions import db

        db.session.remove()
        db.engine.dispose()
    monkeypatch.setenv("FETCHFLEET_DATABASE_URL", urls["ceiling"])
    ceiling = ceiling_app.create_app(every_statement=True)
    one_cycle(ceiling.test_client(), key=keys["ceiling"])
    ceiling.extensions["engine"].dispose()
    real_rows, ceiling_rows = what_was_written(urls["real"]), what_was_written(urls["ceiling"])
    assert len(real_rows["files"]) == 10 and real_rows["leases"][0][3] == "completed"
    assert ceiling_rows == real_rows
