"""A whole fetchfleet on loopback for end-to-end tests: the demo site, a coordinator
served by gunicorn, and client nodes run as real ``python -m client`` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from support.processes import REPO_ROOT, VENV_BIN, ServerProcess, demo_sites, start_coordinator

#: Short backoffs and few attempts so retries happen within a test.
FAST_RETRIES = {
    "RETRY_BACKOFF_SECONDS": 1,
    "RETRY_BACKOFF_MAX_SECONDS": 2,
    "DOWNLOAD_MAX_ATTEMPTS": 3,
    "METADATA_MAX_ATTEMPTS": 3,
    "EMPTY_QUEUE_RETRY_AFTER_SECONDS": 1,
}


@dataclass
class Fleet:
    site: ServerProcess
    coordinator: ServerProcess
    workdir: Path
    database_url: str
    admin_key: str
    keys: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls, site: ServerProcess, workdir: Path, database_url: str, env: dict[str, str] | None = None, **settings
    ) -> Fleet:
        """``env``: variables for the coordinator and every node (a file store's settings and
        credentials); ``settings``: the coordinator's own."""
        from server import create_app
        from server.auth import create_key
        from server.cli import init_db
        from server.extensions import db
        from server.models import Role

        sites = demo_sites(site.url)
        config = workdir / "fleet_config.py"
        config.write_text(f"GALLERY_DL_CONFIG = ''\nSITES = {sites!r}\n")
        app = create_app({"DATABASE_URL": database_url, "SITES": sites})
        with app.app_context():
            init_db()
            admin = create_key(db.session, "ops", Role.ADMIN)
            keys = {name: create_key(db.session, name) for name in ("node1", "node2")}
            db.session.remove()
            db.engine.dispose()
        coordinator = start_coordinator(
            database_url, sites, workdir, workers=2, env=env, **{**FAST_RETRIES, **settings}
        )
        node_env = {name: value for name, value in os.environ.items() if not name.startswith("FETCHFLEET_")}
        node_env["FETCHFLEET_CONFIG"] = str(config)
        node_env.update(env or {})
        return cls(site, coordinator, workdir, database_url, admin, keys, node_env)

    def stop(self) -> None:
        self.coordinator.stop()

    # ------------------------------------------------------------ talking to it

    def import_csv(self, text: str) -> dict:
        text = text.replace("{root}", self.site.url)
        response = requests.post(
            self.coordinator.url + "/inventory",
            data=text.encode(),
            headers={"Authorization": f"Bearer {self.admin_key}", "Content-Type": "text/csv"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def stats(self) -> dict:
        """``/stats`` as a key holder sees it (with clients and errors)."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        return requests.get(self.coordinator.url + "/stats", headers=headers, timeout=10).json()

    def admin(self, method: str, path: str, **kwargs) -> dict:
        response = requests.request(
            method,
            self.coordinator.url + path,
            timeout=30,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            **kwargs,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def download_tasks(self) -> dict[str, dict]:
        """Every download task (up to 100) as the admin report shows it, by remote id."""
        return {task["remote_id"]: task for task in self.admin("GET", "/tasks?kind=download&limit=100")["tasks"]}

    def site_counter(self) -> dict:
        return requests.get(self.site.url + "/_counter", timeout=10).json()

    def dest(self, node: str = "node1") -> Path:
        return self.workdir / f"dest-{node}"

    def client_command(self, *args: str, node: str = "node1") -> list[str]:
        """``python -m client ARGS`` as ``node``; downloads go to the node's own folder."""
        if args and args[0] == "download" and "--dest" not in args:
            args = (*args, "--dest", str(self.dest(node)))
        return [sys.executable, "-m", "client", "--server", self.coordinator.url, "--key", self.keys[node], *args]

    def node_env(self, node: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A node's own settings: its embedded cache lives in its own folder."""
        own = {"FETCHFLEET_CACHE_PATH": str(self.workdir / f"cache-{node}"), "FETCHFLEET_NODE_NAME": node}
        return {**self.env, **own, **(extra or {})}

    def client(
        self, *args: str, node: str = "node1", timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.client_command(*args, node=node),
            cwd=REPO_ROOT,
            env=self.node_env(node, env),
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    def start_client(self, *args: str, node: str = "node1", env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.workdir / f"client-{node}-{time.monotonic_ns()}.log", "w") as log:
            return subprocess.Popen(
                self.client_command(*args, node=node),
                cwd=REPO_ROOT,
                env=self.node_env(node, env),
                text=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def newest_client_log(self) -> str:
        """The tail of the output of the client started last by ``start_client``."""
        logs = sorted(self.workdir.glob("client-*.log"), key=lambda path: path.stat().st_mtime)
        return logs[-1].read_text()[-3000:] if logs else ""

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if predicate(stats):
                return stats
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: {json.dumps(self.stats())[:2000]}")

    def drain(self, kind: str, *args: str, rounds: int = 10, node: str = "node1") -> list[subprocess.CompletedProcess]:
        """Run a client with --drain until nothing of ``kind`` is queued (backoffs included)."""
        runs = []
        for _ in range(rounds):
            runs.append(self.client(kind, *args, "--drain", node=node))
            assert runs[-1].returncode in (0, 1), runs[-1].stdout + runs[-1].stderr
            stats = self.stats()
            if kind == "metadata":
                queued = stats["tasks"]["metadata"]["queued"]
            else:
                queued = stats["sites"][args[0]]["tasks"]["download"].get("queued", 0)
            if not queued:
                return runs
            time.sleep(1.2)
        raise AssertionError(f"{kind} still has queued tasks after {rounds} rounds: {self.stats()['tasks']}")

    def flask(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``flask --app server ARGS`` with the coordinator's settings and environment."""
        return subprocess.run(
            [str(VENV_BIN / "flask"), "--app", "server", *args],
            cwd=REPO_ROOT,
            env={**os.environ, **self.coordinator.env},
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    def video_durations(self) -> list[float]:
        """The probed durations of the file records that have one."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        with engine.connect() as connection:
            found = connection.execute(text("SELECT duration FROM files WHERE duration IS NOT NULL")).scalars().all()
        engine.dispose()
        return list(found)

    def files(self) -> list[dict]:
        """Every file record the coordinator holds, from its database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        with engine.connect() as connection:
            rows = (
                connection.execute(
                    text(
                        "SELECT f.id, f.task_id, f.client_id, f.path, f.size, f.sha256, f.mime, f.phash, f.dhash, "
                        "f.store_key, f.on_node, "
                        "t.remote_id, t.site FROM files f JOIN tasks t ON t.id = f.task_id ORDER BY f.task_id"
                    )
                )
                .mappings()
                .all()
            )
        engine.dispose()
        return [dict(row) for row in rows]


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a client and its worker processes (started in their own session)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
