"""Real CouchDB-protocol servers for the cache tests: pouchdb-server from ``node_modules``
(``make test`` runs ``npm ci``), started as ``../shared/notes/couchdb.md`` measured.

Ready means ``GET /_all_dbs`` answers AND the process is alive: pouchdb-server exits 0
with only a message when its port is taken.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from support.processes import REPO_ROOT, ServerProcess, free_port, start_server

POUCHDB_SERVER = REPO_ROOT / "node_modules" / ".bin" / "pouchdb-server"


def require_pouchdb_server() -> None:
    if POUCHDB_SERVER.exists() and shutil.which("node"):
        return
    reason = f"pouchdb-server is not installed at {POUCHDB_SERVER}: run `npm ci` (make test does)"
    if os.environ.get("REQUIRE_COUCHDB") == "1":
        pytest.fail(f"REQUIRE_COUCHDB=1 but {reason}")
    pytest.skip(reason)


def start_couchdb(data_dir: Path, port: int | None = None) -> ServerProcess:
    """A pouchdb-server keeping its data (and log) in ``data_dir``; restartable on the same port."""
    require_pouchdb_server()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "config.json"
    config.write_text(json.dumps({"log": {"file": str(data_dir / "couch.log")}}))
    port = port or free_port()
    server = start_server(
        [
            str(POUCHDB_SERVER),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--config",
            str(config),
            "--no-stdout-logs",
            "--no-color",
        ],
        url=f"http://127.0.0.1:{port}",
        ready_path="/_all_dbs",
        log_path=data_dir / "stdout.log",
        env={"NODE_OPTIONS": "--unhandled-rejections=warn"},
        cwd=data_dir,
    )
    time.sleep(0.3)  # a server that lost the port race exits 0 right after printing
    if not server.alive():
        raise RuntimeError(f"pouchdb-server on port {port} exited:\n{server.log()[-2000:]}")
    return server
