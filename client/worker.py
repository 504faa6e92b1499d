"""What runs inside a worker process: one engine instance per engine name, one job at a
time. Results come back as the dicts the coordinator's submit takes, or as a node
fault (``NODE_FAULT``: the disk, not the task), which the parent never submits.

A worker dies with its node: a watchdog thread ends it within a second of the node's
death (the fork server does not notice by itself: every worker holds its "node alive"
pipe open), and the kernel kills it if its own parent, the fork server, goes.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from common.protocol import LeasedTask, Result
from common.sites import is_site_name
from common.states import FailureClass, ResultStatus

from .engines import Engine, Failure, load
from .engines.base import NodeFault, StopAtKnown, node_fault_of
from .hashing import describe_file
from .probe import probed
from .sidecar import write_sidecar
from .storage import PARTIAL_DIR

#: A result status that stays on the node: the task is handed back, not charged.
NODE_FAULT = "node_fault"
_PR_SET_PDEATHSIG = 1
_job_numbers = itertools.count(1)

_settings: dict[str, Any] = {}
_sites: dict[str, dict[str, Any]] = {}
_engines: dict[str, Engine] = {}


def initialize(settings: dict[str, Any], sites: dict[str, dict[str, Any]], node_pid: int | None = None) -> None:
    """Pool initializer. Ctrl-C, and systemd's SIGTERM on stop, reach the whole process
    group: the parent decides (``client.fork_server``).

    Workers never write to the terminal (gallery-dl prints bare newlines on interrupted
    downloads, which would tear the parent's progress bar): what a job has to say
    comes back in its result.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(node_pid)
    os.environ["YTDLP_NO_PLUGINS"] = "1"  # no code from ~/.config/yt-dlp/plugins or sys.path
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]
    root.setLevel(logging.WARNING)
    _settings.clear()
    _settings.update(settings)
    _sites.clear()
    _sites.update(sites)
    _engines.clear()


def _die_with(node_pid: int | None) -> None:
    """SIGKILL when the parent dies (Linux), and a watchdog on the node process itself."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def alive() -> bool:
        if os.getppid() != parent:
            return False
        try:
            os.kill(node_pid, 0) if node_pid else None
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of that number exists
            pass
        return True

    def watch() -> None:
        while alive():
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _engine_for(site: str) -> Engine:
    info = _sites.get(site)
    if info is None:
        raise Failure(FailureClass.TRANSIENT, f"site {site!r} is not known to this worker")
    name = info["engine"]
    if name not in _engines:
        _engines[name] = load(name)(_settings, _sites)
    return _engines[name]


def resolve(task: LeasedTask) -> Result:
    """A metadata task: what exists at ``task['url']`` on ``task['site']``."""
    try:
        resolution = _engine_for(task["site"]).resolve(
            task["url"], task["site"], StopAtKnown.from_check(task.get("check"))
        )
    except Failure as failure:
        return failure.as_result(task["id"])
    except Exception as exc:  # an engine bug must not take the batch down: report it
        return _unexpected(task, exc)
    result = {
        "task_id": task["id"],
        "status": ResultStatus.DONE,
        "found": [thing.as_wire(task["site"]) for thing in resolution.found],
    }
    if resolution.stopped_at_known:
        result["stopped_at_known"] = True
    return result


def download(task: LeasedTask, dest: str) -> Result:
    """A download task: fetch into ``dest/<site>/``, hash, write sidecars, list the files.

    Unfinished files live in a folder of this job's own, removed however the job ends:
    a failure leaves no ``.part`` behind.
    """
    root = Path(dest).resolve()
    partial = root / PARTIAL_DIR / f"{os.getpid()}-{next(_job_numbers)}"
    try:
        if not is_site_name(task["site"]):  # the runner checked too; this names a folder
            raise Failure(FailureClass.PERMANENT, f"refused by this node: site name {task['site']!r}")
        directory = root / task["site"]
        directory.mkdir(parents=True, exist_ok=True)
        partial.mkdir(parents=True, exist_ok=True)
        written = _engine_for(task["site"]).download(task["url"], task["site"], directory, partial, task)
        files = []
        for item in written:
            path = item.path.resolve()
            try:
                relative = path.relative_to(root).as_posix()
            except ValueError:
                raise Failure(FailureClass.PERMANENT, f"the engine wrote {path} outside --dest {root}") from None
            info = describe_file(path)
            if info["mime"].startswith(("video/", "audio/")):
                video = probed(path, item.metadata)
                if video is not None:
                    info["video"] = video
            write_sidecar(path, task=task, file_info=info, metadata=item.metadata)
            files.append({"path": relative, **info})
    except Failure as failure:
        return failure.as_result(task["id"])
    except NodeFault as fault:
        return node_fault(task, fault)
    except Exception as exc:
        if (fault := node_fault_of(exc)) is not None:  # e.g. the sidecar hit a full disk
            return node_fault(task, fault)
        return _unexpected(task, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"task_id": task["id"], "status": ResultStatus.DONE, "files": files}


def node_fault(task: dict[str, Any], fault: NodeFault) -> dict[str, Any]:
    return {"task_id": task["id"], "status": NODE_FAULT, "error": str(fault)}


def _unexpected(task: dict[str, Any], exc: Exception) -> dict[str, Any]:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    location = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    message = f"unexpected {exc.__class__.__name__}{location}: {exc}"
    return Failure(FailureClass.TRANSIENT, message).as_result(task["id"])
