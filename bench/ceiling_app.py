"""The ceiling comparator: the smallest Flask app that does the coordinator's lease and
complete statements, with the same wire shapes, and nothing else (no auth, no
validation, no ORM).

    gunicorn 'bench.ceiling_app:create_app()'   (FETCHFLEET_DATABASE_URL picks the database)

By default it runs the two statements that move tasks (lease, complete): no lease rows,
no file records. ``create_app(every_statement=True)`` runs every statement fetchfleet
runs per lease and per submit (the expired-lease check, the lease row, reading the lease,
the file records, ending the lease), written by hand: what the coordinator's writes
cost over HTTP without its framework, key check and validation.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta

from flask import Flask, Response, request
from sqlalchemy import bindparam, create_engine, text

LEASE = {
    "sqlite": text(
        "WITH picked AS MATERIALIZED (SELECT id FROM tasks WHERE state = 'queued' AND kind = 'download' "
        "AND site = :site AND available_at <= :now ORDER BY priority DESC, id LIMIT :n) "
        "UPDATE tasks SET state = 'leased', lease_id = :lease, leased_at = :now, updated_at = :now "
        "FROM picked WHERE tasks.id = picked.id RETURNING tasks.id, tasks.url"
    ),
    "postgresql": text(
        "WITH picked AS MATERIALIZED (SELECT id FROM tasks WHERE state = 'queued' AND kind = 'download' "
        "AND site = :site AND available_at <= :now ORDER BY priority DESC, id LIMIT :n FOR UPDATE SKIP LOCKED) "
        "UPDATE tasks SET state = 'leased', lease_id = :lease, leased_at = :now, updated_at = :now "
        "FROM picked WHERE tasks.id = picked.id RETURNING tasks.id, tasks.url"
    ),
}
COMPLETE = text(
    "UPDATE tasks SET state = 'done', done_at = :now, updated_at = :now, lease_id = NULL, result_lease_id = :lease "
    "WHERE lease_id = :lease AND state = 'leased' AND id IN :ids RETURNING id"
).bindparams()

#: With every statement, completing also says who did it, as fetchfleet records it.
COMPLETE_ALL = text(
    "UPDATE tasks SET state = 'done', done_at = :now, done_by = :client, available_at = :now, updated_at = :now, "
    "lease_id = NULL, result_lease_id = :lease WHERE lease_id = :lease AND state = 'leased' AND id IN :ids RETURNING id"
).bindparams()

#: The statements fetchfleet adds around those two (``every_statement=True``).
EXPIRED_LEASES = {
    "sqlite": text(
        "SELECT id, client_id FROM leases WHERE state = 'active' AND expires_at <= :now ORDER BY id LIMIT 1000"
    ),
    "postgresql": text(
        "SELECT id, client_id FROM leases WHERE state = 'active' AND expires_at <= :now ORDER BY id LIMIT 1000 "
        "FOR UPDATE SKIP LOCKED"
    ),
}
INSERT_LEASE = text(
    "INSERT INTO leases (id, kind, site, client_id, state, task_count, seconds, created_at, expires_at) "
    "VALUES (:lease, 'download', :site, :client, 'active', :count, 3600, :now, :expires)"
)
READ_LEASE = text("SELECT id, client_id, kind, state FROM leases WHERE id = :lease")
FILE_COLUMNS = "task_id, client_id, path, size, sha256, mime, phash, dhash, created_at"
INSERT_FILES = {
    "sqlite": f"INSERT INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "postgresql": text(
        f"INSERT INTO files ({FILE_COLUMNS}) SELECT * FROM unnest(CAST(:task_id AS bigint[]), "
        "CAST(:client_id AS integer[]), CAST(:path AS text[]), CAST(:size AS bigint[]), CAST(:sha256 AS text[]), "
        "CAST(:mime AS text[]), CAST(:phash AS text[]), CAST(:dhash AS text[]), CAST(:created_at AS timestamptz[])) "
        "ON CONFLICT DO NOTHING"
    ),
}
END_LEASE = text(
    "UPDATE leases SET state = 'completed', ended_at = :now WHERE id = :lease AND state = 'active' "
    "AND NOT EXISTS (SELECT 1 FROM tasks WHERE lease_id = :lease AND state = 'leased')"
)


def _json(body, status=200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def create_app(every_statement: bool = False) -> Flask:
    url = os.environ["FETCHFLEET_DATABASE_URL"]
    engine = create_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})
    dialect = engine.dialect.name
    if dialect == "sqlite":
        # The coordinator's own SQLite set-up (WAL, BEGIN IMMEDIATE): the ceiling must not
        # lose to a handicap the product does not have.
        from server.database import install_sqlite_behaviour

        install_sqlite_behaviour(engine)
    client_id = None
    if every_statement:
        with engine.connect() as connection:
            client_id = connection.execute(text("SELECT min(id) FROM api_keys")).scalar()

    complete = (COMPLETE_ALL if every_statement else COMPLETE).bindparams(bindparam("ids", expanding=True))
    app = Flask(__name__)
    app.extensions["engine"] = engine  # for whoever made the app to dispose of

    def stamp(moment: datetime) -> str | datetime:
        """What the coordinator's UTCDateTime stores: naive UTC text on SQLite."""
        return moment.replace(tzinfo=None).isoformat(" ") if dialect == "sqlite" else moment

    @app.post("/leases")
    def lease():
        body = json.loads(request.get_data())
        lease_id = secrets.token_urlsafe(32)
        started = datetime.now(UTC)
        moment = stamp(started)
        with engine.begin() as connection:
            if every_statement:
                connection.execute(EXPIRED_LEASES[dialect], {"now": moment}).all()
            rows = connection.execute(
                LEASE[dialect], {"site": body["site"], "n": body["n"], "now": moment, "lease": lease_id}
            ).all()
            if every_statement and rows:
                parameters = {"lease": lease_id, "site": body["site"], "client": client_id, "count": len(rows)}
                expires = stamp(started + timedelta(hours=1))
                connection.execute(INSERT_LEASE, {**parameters, "now": moment, "expires": expires})
        if not rows:
            return _json({"lease_id": None, "tasks": []})
        return _json({"lease_id": lease_id, "tasks": [{"id": row.id, "url": row.url} for row in rows]}, 201)

    @app.post("/leases/<lease_id>/results")
    def results(lease_id: str):
        body = json.loads(request.get_data())
        ids = [result["task_id"] for result in body["results"]]
        moment = stamp(datetime.now(UTC))
        with engine.begin() as connection:
            if every_statement:
                connection.execute(READ_LEASE, {"lease": lease_id}).one()
            parameters = {"ids": ids, "lease": lease_id, "now": moment, "client": client_id}
            done = connection.execute(complete, parameters).scalars().all()
            if every_statement:
                _insert_files(connection, dialect, client_id, body["results"], moment)
                connection.execute(END_LEASE, {"lease": lease_id, "now": moment})
        return _json({"accepted": done})

    return app


def _insert_files(connection, dialect: str, client_id: int, results: list[dict], moment: str | datetime) -> None:
    rows = [
        (result["task_id"], client_id, file["path"], file["size"], file["sha256"], file.get("mime"), None, None, moment)
        for result in results
        for file in result["files"]
    ]
    if dialect == "sqlite":
        connection.exec_driver_sql(INSERT_FILES["sqlite"], rows)
        return
    columns = [name.strip() for name in FILE_COLUMNS.split(",")]
    connection.execute(INSERT_FILES["postgresql"], dict(zip(columns, map(list, zip(*rows, strict=True)), strict=True)))
