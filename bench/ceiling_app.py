"""The ceiling comparator: the smallest Flask app that does the coordinator's lease and
complete statements, with the same wire shapes, and nothing else (no auth, no
validation, no ORM, no lease rows, no file records).

    gunicorn 'bench.ceiling_app:create_app()'   (FETCHFLEET_DATABASE_URL picks the database)
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime

from flask import Flask, Response, request
from sqlalchemy import create_engine, text

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


def _json(body, status=200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def create_app() -> Flask:
    from sqlalchemy import bindparam

    url = os.environ["FETCHFLEET_DATABASE_URL"]
    engine = create_engine(url, connect_args={"timeout": 60} if url.startswith("sqlite") else {})
    dialect = engine.dialect.name
    if dialect == "sqlite":
        # The coordinator's own SQLite set-up (WAL, BEGIN IMMEDIATE): the ceiling must not
        # lose to a handicap the product does not have.
        from server.database import install_sqlite_behaviour

        install_sqlite_behaviour(engine)

    complete = COMPLETE.bindparams(bindparam("ids", expanding=True))
    app = Flask(__name__)

    def now() -> str | datetime:
        moment = datetime.now(UTC)
        return moment.replace(tzinfo=None).isoformat(" ") if dialect == "sqlite" else moment

    @app.post("/leases")
    def lease():
        body = json.loads(request.get_data())
        lease_id = secrets.token_urlsafe(32)
        with engine.begin() as connection:
            rows = connection.execute(
                LEASE[dialect], {"site": body["site"], "n": body["n"], "now": now(), "lease": lease_id}
            ).all()
        if not rows:
            return _json({"lease_id": None, "tasks": []})
        return _json({"lease_id": lease_id, "tasks": [{"id": row.id, "url": row.url} for row in rows]}, 201)

    @app.post("/leases/<lease_id>/results")
    def results(lease_id: str):
        body = json.loads(request.get_data())
        ids = [result["task_id"] for result in body["results"]]
        with engine.begin() as connection:
            done = connection.execute(complete, {"ids": ids, "lease": lease_id, "now": now()}).scalars().all()
        return _json({"accepted": done})

    return app
