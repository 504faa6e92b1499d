"""Can this node store files? Asked when a job hit a full disk, a quota or a read-only
``--dest``, before the node takes work again."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from .engines.base import NODE_ERRNOS

log = logging.getLogger("fetchfleet")

#: Where download jobs keep unfinished files under ``--dest``, one folder per job
#: (``<worker pid>-<job number>``), removed when the job ends.
PARTIAL_DIR = Path(".fetchfleet") / "partial"

#: Written and removed again to prove the disk takes files: more than a sidecar.
PROBE_BYTES = 64 << 10
FIRST_PAUSE_SECONDS = 2
MAX_PAUSE_SECONDS = 60


def storage_problem(dest: Path | None) -> str | None:
    """Why ``dest`` cannot take a file right now, or None when it can."""
    if dest is None:
        return None
    probe = Path(dest) / ".fetchfleet" / f"space-probe-{os.getpid()}"  # nodes may share a --dest
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as stream:
            stream.write(b"\0" * PROBE_BYTES)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        return f"{NODE_ERRNOS.get(error.errno, 'cannot write')}: {error.strerror}"
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return None


def remove_abandoned_partials(dest: Path) -> int:
    """Remove the partial-file folders of jobs whose worker is gone (killed mid-download);
    those of live workers, perhaps another node process on the same ``--dest``, stay."""
    removed = 0
    folder = Path(dest) / PARTIAL_DIR
    for job in folder.glob("*-*") if folder.is_dir() else ():
        try:
            os.kill(int(job.name.split("-", 1)[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(job, ignore_errors=True)
            removed += 1
        except (ValueError, PermissionError):
            continue
    return removed


def backoff_pauses(start: int = 0) -> Iterator[int]:
    """2, 4, 8, ... seconds (from the ``start``-th), then every minute: a disk that was
    cleaned up is noticed soon, one that keeps filling up is not hammered."""
    for attempt in itertools.count(start):
        yield min(FIRST_PAUSE_SECONDS * 2 ** min(attempt, 16), MAX_PAUSE_SECONDS)


def wait_until_storable(dest: Path, stop: threading.Event, problem: str, *, start: int = 0) -> bool:
    """Check ``dest`` again and again, backing off, until it takes files (True) or ``stop``
    is set first (False). ``start`` skips the first pauses: a disk that filled up again
    at once is given longer."""
    for pause in backoff_pauses(start):
        log.warning("%s cannot store files (%s); checking again in %ds", dest, problem, pause)
        if stop.wait(pause):
            return False
        problem = storage_problem(dest)
        if problem is None:
            log.warning("%s takes files again: resuming", dest)
            return True
    return False
