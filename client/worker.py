"""What runs inside a worker process: one engine instance per engine name, one job at a
time. Results come back as the dicts the coordinator's submit takes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from common.hashing import describe_file
from common.states import FailureClass

from .engines import Engine, Failure, load
from .sidecar import write_sidecar

_settings: dict[str, Any] = {}
_sites: dict[str, dict[str, Any]] = {}
_engines: dict[str, Engine] = {}


def initialize(settings: dict[str, Any], sites: dict[str, dict[str, Any]]) -> None:
    """Pool initializer. Ctrl-C reaches the whole process group: the parent decides.

    Workers never write to the terminal (gallery-dl prints bare newlines on interrupted
    downloads, which would tear the parent's progress bar): what a job has to say
    comes back in its result.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]
    root.setLevel(logging.WARNING)
    _settings.clear()
    _settings.update(settings)
    _sites.clear()
    _sites.update(sites)
    _engines.clear()


def _engine_for(site: str) -> Engine:
    info = _sites.get(site)
    if info is None:
        raise Failure(FailureClass.TRANSIENT, f"site {site!r} is not known to this worker")
    name = info["engine"]
    if name not in _engines:
        _engines[name] = load(name)(_settings, _sites)
    return _engines[name]


def resolve(task: dict[str, Any]) -> dict[str, Any]:
    """A metadata task: what exists at ``task['url']`` on ``task['site']``."""
    try:
        found = _engine_for(task["site"]).resolve(task["url"], task["site"])
    except Failure as failure:
        return failure.as_result(task["id"])
    except Exception as exc:  # an engine bug must not take the batch down: report it
        return _unexpected(task, exc)
    return {"task_id": task["id"], "status": "done", "found": [thing.as_wire(task["site"]) for thing in found]}


def download(task: dict[str, Any], dest: str) -> dict[str, Any]:
    """A download task: fetch into ``dest/<site>/``, hash, write sidecars, list the files."""
    root = Path(dest).resolve()
    try:
        written = _engine_for(task["site"]).download(task["url"], task["site"], root / task["site"])
        files = []
        for item in written:
            path = item.path.resolve()
            try:
                relative = path.relative_to(root).as_posix()
            except ValueError:
                raise Failure(FailureClass.PERMANENT, f"the engine wrote {path} outside --dest {root}") from None
            info = describe_file(path)
            write_sidecar(path, task=task, file_info=info, metadata=item.metadata)
            files.append({"path": relative, **info})
    except Failure as failure:
        return failure.as_result(task["id"])
    except Exception as exc:
        return _unexpected(task, exc)
    return {"task_id": task["id"], "status": "done", "files": files}


def _unexpected(task: dict[str, Any], exc: Exception) -> dict[str, Any]:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    location = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    message = f"unexpected {exc.__class__.__name__}{location}: {exc}"
    return Failure(FailureClass.TRANSIENT, message).as_result(task["id"])
