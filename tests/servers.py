"""Start real servers (gunicorn coordinator, demo site, pouchdb-server) on free loopback ports.

Every wait is bounded, and readiness means both "answers HTTP" and "the process is alive"
(some servers print an error and exit 0 when their port is taken).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_server(
    command: Sequence[str],
    *,
    url: str,
    ready_path: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = 60,
) -> ServerProcess:
    full_env = {**os.environ, **(env or {})}
    log = open(log_path, "ab")
    process = subprocess.Popen(list(command), cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = ServerProcess(process, url, log_path, dict(env or {}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(url + ready_path, timeout=2).status_code < 500:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{command[0]} not ready at {url} after {timeout}s:\n{server.log()[-3000:]}")


def coordinator_env(database_url: str, sites: Mapping, config_path: Path, **settings) -> dict[str, str]:
    env = {
        "FETCHFLEET_CONFIG": str(config_path),
        "FETCHFLEET_DATABASE_URL": database_url,
        "FETCHFLEET_SITES": json.dumps(sites),
    }
    for name, value in settings.items():
        env[f"FETCHFLEET_{name}"] = json.dumps(value) if not isinstance(value, str) else value
    return env


def start_coordinator(
    database_url: str, sites: Mapping, workdir: Path, *, workers: int = 4, **settings
) -> ServerProcess:
    """The coordinator as production runs it: gunicorn, several worker processes."""
    config = workdir / "coordinator_config.py"
    config.write_text("# set by the test through FETCHFLEET_* variables\n")
    port = free_port()
    return start_server(
        [str(VENV_BIN / "gunicorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
         "--access-logfile", "-", "--graceful-timeout", "5", "server:create_app()"],
        url=f"http://127.0.0.1:{port}",
        ready_path="/health",
        log_path=workdir / f"gunicorn-{port}.log",
        env=coordinator_env(database_url, sites, config, **settings),
    )
