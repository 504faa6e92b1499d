"""A coordinator that says whatever a test wants: leases with hostile options, URLs and site
names, or 500s and dropped connections. Real HTTP on loopback, served from a thread."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server


@dataclass
class FakeCoordinator:
    """Hands out ``leases`` (each a ``{"sites": {...}, "tasks": [...]}``) in order, then none.

    ``fail`` may return a status for a request path (answered with a JSON error), or None
    to serve it.
    """

    leases: list[dict[str, Any]] = field(default_factory=list)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: Callable[[str], int | None] = lambda path: None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    released: list[int] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._held: dict[str, set[int]] = {}
        self.app = self._make_app()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCoordinator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(10)

    def _make_app(self) -> Flask:
        app = Flask("fake-coordinator")

        @app.before_request
        def misbehave():
            self.requests.append(f"{request.method} {request.path}")
            answer = self.fail(request.path)
            if answer is not None:
                return jsonify({"code": answer, "message": "test failure"}), answer
            return None

        @app.get("/sites")
        def sites():
            return jsonify([{"name": name, **info} for name, info in self.sites.items()])

        @app.post("/leases")
        def lease():
            with self._lock:
                if not self.leases:
                    return jsonify({"lease_id": None, "tasks": [], "sites": {}, "retry_after": 1})
                offered = self.leases.pop(0)
                lease_id = f"lease-{next(self._ids)}"
                self._held[lease_id] = {task["id"] for task in offered["tasks"]}
            tasks = [
                {"kind": "download", "remote_id": str(task["id"]), "priority": 0, "attempts": 0, "metadata": {}, **task}
                for task in offered["tasks"]
            ]
            expires = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
            body = {"lease_id": lease_id, "kind": "download", "site": None, "expires_at": expires}
            return jsonify({**body, "tasks": tasks, "sites": offered["sites"], "retry_after": None}), 201

        @app.post("/leases/<lease_id>/results")
        def results(lease_id):
            with self._lock:
                for result in request.get_json()["results"]:
                    self.results[result["task_id"]] = result
                    self._held.get(lease_id, set()).discard(result["task_id"])
            return jsonify({"accepted": [], "unchanged": [], "conflicts": [], "download_tasks_created": 0})

        @app.post("/leases/<lease_id>/extend")
        def extend(lease_id):
            return jsonify({"lease_id": lease_id, "state": "active"})

        @app.post("/leases/<lease_id>/release")
        def release(lease_id):
            wanted = (request.get_json(silent=True) or {}).get("task_ids")
            with self._lock:
                held = self._held.get(lease_id, set())
                ids = sorted(held if wanted is None else held & set(wanted))
                held.difference_update(ids)
                self.released.extend(ids)
            return jsonify({"released": ids})

        return app
