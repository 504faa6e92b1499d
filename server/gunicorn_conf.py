"""gunicorn settings for the coordinator: ``gunicorn -c python:server.gunicorn_conf
'server:create_app()'``. Gives the workers one directory for Prometheus' multiprocess
mode, so that a scrape served by any worker counts what every worker did.

gunicorn reads this in the master process, before any worker starts (and before anything
imports prometheus_client, which reads ``PROMETHEUS_MULTIPROC_DIR`` on import). A
directory the operator sets is emptied at start (its files describe dead processes);
one made here is removed at exit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_made_here = _VARIABLE not in os.environ
if _made_here:
    os.environ[_VARIABLE] = tempfile.mkdtemp(prefix="fetchfleet-metrics-")
else:
    Path(os.environ[_VARIABLE]).mkdir(parents=True, exist_ok=True)
    for stale in Path(os.environ[_VARIABLE]).glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    """A worker's live gauges die with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _made_here:
        shutil.rmtree(os.environ[_VARIABLE], ignore_errors=True)
