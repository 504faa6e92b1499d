"""What differs between the two task kinds on a node, one class each: the shortcut that
answers a task without a job (the metadata cache; the node's archive of downloads), the
job a worker runs, what the node remembers of a fresh result, and what a lease's end
asks for. The runner is the same loop for both."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common.states import ResultStatus, TaskKind

from . import worker
from .archive import Archive
from .cache import GuardedCache
from .uploads import UPLOAD_PENDING, Uploader

log = logging.getLogger("fetchfleet")

Task = dict[str, Any]
Result = dict[str, Any]


class KindOfWork:
    kind: TaskKind

    def shortcuts(self, tasks: Iterable[Task]) -> dict[int, Result]:
        """Results for the tasks that need no job, by task id."""
        return {}

    def job(self, task: Task) -> tuple[Callable[..., Result], tuple]:
        raise NotImplementedError

    def remember(self, task: Task, result: Result) -> None:
        """A fresh result came back from a worker."""

    def lease_ended(self) -> None:
        """Every task of a lease is finished or handed back."""

    def settle(self, task: Task, result: Result) -> Result:
        """What a worker's result becomes before it is reported: ``UPLOAD_PENDING`` holds it
        on the node (see ``hold``); most results go out as they are."""
        return result

    def hold(self, task: Task, result: Result) -> None:
        """A result the node keeps until it can be completed (``UPLOAD_PENDING``)."""
        raise NotImplementedError

    def completed(self) -> list[tuple[Task, Result]]:
        """Results held earlier that are complete now (or have failed)."""
        return []

    def holding_problem(self) -> str | None:
        """Why held results cannot be completed right now (None: they can, soon)."""
        return None

    def close(self) -> None:
        pass


class MetadataWork(KindOfWork):
    """Resolves items; a fresh resolution in the shared cache answers without asking the site."""

    kind = TaskKind.METADATA

    def __init__(self, cache: GuardedCache | None):
        self.cache = cache
        self._resolved: list[tuple[str, str, list[dict]]] = []

    def shortcuts(self, tasks: Iterable[Task]) -> dict[int, Result]:
        # A subscription's re-check is asked of the site: the cache holds what it found before.
        tasks = [task for task in tasks if (task.get("check") or {}).get("number", 1) <= 1]
        if self.cache is None or not tasks:
            return {}
        cached = self.cache.lookup((task["site"], task["url"]) for task in tasks)  # one bulk read
        return {
            task["id"]: {
                "task_id": task["id"],
                "status": ResultStatus.DONE,
                "found": cached[(task["site"], task["url"])],
            }
            for task in tasks
            if (task["site"], task["url"]) in cached
        }

    def job(self, task: Task) -> tuple[Callable[..., Result], tuple]:
        return worker.resolve, (task,)

    def remember(self, task: Task, result: Result) -> None:
        if self.cache is not None and result["status"] == ResultStatus.DONE:
            self._resolved.append((task["site"], task["url"], result["found"]))

    def lease_ended(self) -> None:
        if self.cache is not None:
            self.cache.store(self._resolved)  # one bulk write
        self._resolved = []

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


class DownloadWork(KindOfWork):
    """Downloads posts into ``dest``; a post this node already holds is reported from disk.
    With a file store (``uploader``), a post is done once its files are in the store: each
    done download is held in the uploader's backlog until they are."""

    kind = TaskKind.DOWNLOAD

    def __init__(self, dest: Path, uploader: Uploader | None = None):
        self.dest = dest
        self.archive = Archive(dest)
        self.uploader = uploader
        if uploader is not None:
            uploader.start()

    def shortcuts(self, tasks: Iterable[Task]) -> dict[int, Result]:
        found = {}
        for task in tasks:
            if self.uploader is not None and (waiting := self.uploader.backlog.lookup(task)) is not None:
                found[task["id"]] = _pending(task, waiting)  # downloaded before, not in the store yet
                continue
            recorded = self.archive.lookup(task["site"], task.get("remote_id"))
            if recorded is None:
                continue
            done = {"task_id": task["id"], "status": ResultStatus.DONE, "files": recorded, "already_on_node": True}
            if self.uploader is not None and not all(record.get("store_key") for record in recorded):
                done = _pending(task, done)  # downloaded before this node had a store
            found[task["id"]] = done
        return found

    def job(self, task: Task) -> tuple[Callable[..., Result], tuple]:
        return worker.download, (task, str(self.dest))

    def settle(self, task: Task, result: Result) -> Result:
        if self.uploader is None or result["status"] != ResultStatus.DONE:
            return result
        if all(record.get("store_key") for record in result["files"]):
            return result  # uploaded
        return _pending(task, result)

    def hold(self, task: Task, result: Result) -> None:
        self.uploader.hold(task, result["result"])

    def completed(self) -> list[tuple[Task, Result]]:
        return self.uploader.finished() if self.uploader is not None else []

    def holding_problem(self) -> str | None:
        return self.uploader.outage if self.uploader is not None else None

    def remember(self, task: Task, result: Result) -> None:
        if result["status"] != ResultStatus.DONE:
            return
        try:
            self.archive.record(task["site"], task.get("remote_id"), result["files"])
        except sqlite3.OperationalError as error:  # "database or disk is full": the files stand
            log.warning("could not note task %s in the node archive: %s", task["id"], error)

    def close(self) -> None:
        if self.uploader is not None:
            self.uploader.stop()
        self.archive.close()


def _pending(task: Task, done: Result) -> Result:
    """A done download held back until its files are in the store."""
    return {"task_id": task["id"], "status": UPLOAD_PENDING, "result": {**done, "task_id": task["id"]}}
