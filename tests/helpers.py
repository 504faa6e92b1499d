"""Small helpers the tests share: test sites, keys, CSV import, leasing shortcuts."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import flask

from common.version import CLIENT_VERSION_HEADER, __version__

TEST_SITES = {
    "booru": {
        "engine": "gallery-dl",
        "search_url": "http://booru.test/post?tags={query}",
        "url_patterns": [r"^https?://booru\.test/"],
        "post_url": "http://booru.test/post/show/{id}",
    },
    "tube": {
        "engine": "yt-dlp",
        "search_url": "http://tube.test/search?q={query}",
        "url_patterns": [r"^https?://tube\.test/"],
    },
    "slow": {
        "engine": "gallery-dl",
        "url_patterns": [r"^https?://slow\.test/"],
        "max_in_flight": 3,
    },
}

SHA = "ab" * 32


def file_record(path: str = "booru/1.png", size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"path": path, "size": size, "sha256": SHA, "mime": "image/png", **extra}


class Actions:
    """Things most tests do: make keys, import inventory, lease and submit over the API."""

    def __init__(self, app, client):
        self.app = app
        self.client = client
        self._keys: dict[str, str] = {}

    def context(self):
        """The test's own app context when it has one (one session: no SQLite lock waits)."""
        return contextlib.nullcontext() if flask.has_app_context() else self.app.app_context()

    def key(self, name: str = "node1", admin: bool = False) -> str:
        if name not in self._keys:
            from server.auth import create_key
            from server.extensions import db
            from server.models import Role

            with self.context():
                self._keys[name] = create_key(db.session, name, Role.ADMIN if admin else Role.CLIENT)
        return self._keys[name]

    def headers(self, name: str = "node1", admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(name, admin)}", CLIENT_VERSION_HEADER: __version__}

    def import_csv(self, text: str):
        from server import context
        from server.extensions import db
        from server.inventory import import_inventory

        with self.context():
            return import_inventory(db.session, io.StringIO(text, newline=""), sites=context.sites())

    def lease(self, kind: str = "metadata", n: int = 10, site: str | None = None, who: str = "node1", **extra):
        body = {"kind": kind, "n": n, **extra}
        if site is not None:
            body["site"] = site
        return self.client.post("/leases", json=body, headers=self.headers(who))

    def submit(self, lease_id: str, results: list[dict], who: str = "node1"):
        return self.client.post(f"/leases/{lease_id}/results", json={"results": results}, headers=self.headers(who))

    def add_download_tasks(self, site: str, count: int, start: int = 1, priority: int = 0) -> list[int]:
        """Queue ``count`` download tasks straight into the table (no metadata round)."""
        from server.counts import tally
        from server.database import utcnow
        from server.extensions import db
        from server.models import Task
        from server.transitions import new_download_task

        now = utcnow()
        rows = [
            new_download_task(None, site, str(number), f"http://{site}.test/{number}", None, priority, now)
            for number in range(start, start + count)
        ]
        with self.context():
            ids = db.session.execute(Task.__table__.insert().returning(Task.id), rows).scalars().all()
            tally(db.session).task_moved("download", site, None, "queued", len(rows))  # as a found post's would be
            db.session.commit()
        return sorted(ids)

    def task(self, task_id: int):
        from server.extensions import db
        from server.models import Task

        with self.context():
            db.session.expire_all()
            return db.session.get(Task, task_id)

    def count_tasks(self, **filters) -> int:
        from sqlalchemy import func, select

        from server.extensions import db
        from server.models import Task

        with self.context():
            statement = select(func.count()).select_from(Task)
            for name, value in filters.items():
                statement = statement.where(getattr(Task, name) == value)
            return db.session.scalar(statement)
