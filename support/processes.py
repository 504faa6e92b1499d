"""Start and stop the real servers (demo site, gunicorn coordinator) on free loopback ports.

Shared by the one-command demo, the tests and the benchmarks. Every wait is bounded,
and "ready" means both "answers HTTP" and "the process is still alive" (some servers
print an error and exit 0 when their port is taken).
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

from common.settings import REPO_ROOT

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

    def alive(self) -> bool:
        return self.process.poll() is None

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
    with open(log_path, "ab") as log:
        process = subprocess.Popen(list(command), cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
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


def start_demo_site(
    workdir: Path, *, posts: int = 240, latency: float = 0.0, image_size: int | None = None, port: int | None = None
) -> ServerProcess:
    from demo import streams

    try:  # built here first (once per machine): the site's start is then quick, whatever the machine
        streams.build()
    except RuntimeError:
        pass  # no ffmpeg: the site serves everything but its streams, and says so
    port = port or free_port()
    command = [sys.executable, "-m", "demo.site", "--port", str(port), "--posts", str(posts), "--latency", str(latency)]
    if image_size:
        command += ["--image-size", str(image_size)]
    return start_server(
        command, url=f"http://127.0.0.1:{port}", ready_path="/_counter", log_path=workdir / f"demo-site-{port}.log"
    )


def coordinator_env(database_url: str, sites: Mapping, config_path: Path, **settings) -> dict[str, str]:
    """FETCHFLEET_* variables for a coordinator process (config file first, then these)."""
    env = {
        "FETCHFLEET_CONFIG": str(config_path),
        "FETCHFLEET_DATABASE_URL": database_url,
        "FETCHFLEET_SITES": json.dumps(sites),
    }
    for name, value in settings.items():
        env[f"FETCHFLEET_{name}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def start_coordinator(
    database_url: str,
    sites: Mapping,
    workdir: Path,
    *,
    workers: int = 4,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    **settings,
) -> ServerProcess:
    """The coordinator as production runs it: gunicorn with several worker processes.
    ``env``: more variables (a file store's credentials); ``settings``: FETCHFLEET_* ones."""
    config = workdir / "coordinator_config.py"
    if not config.exists():
        config.write_text("# settings come from FETCHFLEET_* variables\n")
    port = port or free_port()
    return start_server(
        [
            str(VENV_BIN / "gunicorn"),
            "--config",
            "python:server.gunicorn_conf",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            "server:create_app()",
        ],
        url=f"http://127.0.0.1:{port}",
        ready_path="/health",
        log_path=workdir / f"coordinator-{port}.log",
        env={**(env or {}), **coordinator_env(database_url, sites, config, **settings)},
    )


def demo_sites(site_url: str) -> dict:
    """The demo site as the coordinator's SITES: a moebooru instance and a video site."""
    host = site_url.split("://", 1)[1].replace(".", r"\.")
    return {
        "demo": {
            "engine": "gallery-dl",
            "search_url": site_url + "/post?tags={query}",
            "url_patterns": [rf"^https?://{host}/(post|data)"],
            "post_url": site_url + "/post/show/{id}",
            "options": {"extractor": {"moebooru": {"demo": {"root": site_url}}}},
        },
        "demotube": {
            "engine": "yt-dlp",
            "search_url": site_url + "/videos?q={query}",
            "url_patterns": [rf"^https?://{host}/(watch|media|videos|stream)"],
        },
    }
