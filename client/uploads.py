"""Finished downloads into the central file store (``FILE_STORE``), and what waits for it.

A download job uploads its own files (in its worker process, beside the download), so
the store costs no extra pass. When the store cannot be reached, the job's files stay
in ``--dest`` and its result waits in an upload backlog on disk
(``DEST/.fetchfleet/uploads.sqlite3``); the task is reported ``done`` only once every
file is in the store. The :class:`Uploader` thread of the node process works that
backlog off when the store is back, also after a restart: nothing is lost in between.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.file_store import FileStore, StoreRejected, StoreUnavailable, sidecar_key

from .sidecar import sidecar_path

log = logging.getLogger("fetchfleet")

#: A result status that stays on the node: downloaded, waiting for the store.
UPLOAD_PENDING = "upload_pending"
#: A store that refused the bytes (changed in flight) is asked again after these pauses.
REJECTED_PAUSES = (0.5, 1.0, 2.0)
#: How long the uploader waits before asking an unreachable store again (doubling).
FIRST_OUTAGE_PAUSE, MAX_OUTAGE_PAUSE = 2.0, 30.0

Task = dict[str, Any]
Result = dict[str, Any]


def upload_files(store: FileStore, dest: Path, task: Task, files: list[dict], *, keep_local: bool) -> list[dict]:
    """Put every file of a done download, and its sidecar, into the store; give the file
    records back with their ``store_key``. Local copies go only after *every* file is
    in the store (``keep_local`` False). Raises StoreUnavailable / StoreRejected."""
    stored = []
    for record in files:
        path = dest / record["path"]
        put = store.put_file(path, record["sha256"], record["size"], mime=record.get("mime"))
        sidecar = sidecar_path(path)
        key = sidecar_key(put.key, task["site"], task.get("remote_id"), task["id"])
        # A new object has no sidecar yet; a known one may have this post's already (a second node).
        if sidecar.is_file() and (put.uploaded or not store.holds(key)):
            store.put_bytes(key, sidecar.read_bytes())
        stored.append({**record, "store_key": put.key})
    if not keep_local:
        for record in stored:
            path = dest / record["path"]
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
            record["kept"] = False
    return stored


def upload_with_retries(
    store: FileStore, dest: Path, task: Task, files: list[dict], *, keep_local: bool, sleep=time.sleep
) -> list[dict]:
    """``upload_files``, asked again (from the start) while the store refuses the bytes;
    the last refusal is raised. An unreachable store is raised at once: it waits."""
    for pause in (*REJECTED_PAUSES, None):
        try:
            return upload_files(store, dest, task, files, keep_local=keep_local)
        except StoreRejected as refusal:
            if pause is None:
                raise
            log.info("task %s: %s; uploading again in %.1fs", task["id"], refusal, pause)
            sleep(pause)
    raise AssertionError("unreachable")


class UploadBacklog:
    """Done downloads whose files are not in the store yet, on disk: they outlive the node
    process. One row per post; shared by the runner and the uploader thread."""

    def __init__(self, dest: Path):
        folder = dest / ".fetchfleet"
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "uploads.sqlite3", timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS waiting (site TEXT NOT NULL, post TEXT NOT NULL, task TEXT NOT NULL, "
                "result TEXT NOT NULL, added_at REAL NOT NULL, PRIMARY KEY (site, post))"
            )
            self._db.commit()

    @staticmethod
    def _post(task: Task) -> str:
        return task.get("remote_id") if task.get("remote_id") is not None else f"task-{task['id']}"

    def add(self, task: Task, result: Result) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO waiting (site, post, task, result, added_at) VALUES (?, ?, ?, ?, ?)",
                (task["site"], self._post(task), json.dumps(task), json.dumps(result), time.time()),
            )
            self._db.commit()

    def remove(self, task: Task) -> None:
        with self._lock:
            self._db.execute("DELETE FROM waiting WHERE site = ? AND post = ?", (task["site"], self._post(task)))
            self._db.commit()

    def lookup(self, task: Task) -> Result | None:
        with self._lock:
            row = self._db.execute(
                "SELECT result FROM waiting WHERE site = ? AND post = ?", (task["site"], self._post(task))
            ).fetchone()
        return json.loads(row[0]) if row else None

    def entries(self) -> Iterator[tuple[Task, Result]]:
        with self._lock:
            rows = self._db.execute("SELECT task, result FROM waiting ORDER BY added_at").fetchall()
        for task, result in rows:
            yield json.loads(task), json.loads(result)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM waiting").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Uploader(threading.Thread):
    """Works off the upload backlog in the node process: one post at a time, asking an
    unreachable store again with backoff, saying once per outage that it is down and
    once that it is back. What it finishes comes out of :meth:`finished`."""

    def __init__(self, store_factory: Callable[[], FileStore], dest: Path, *, keep_local: bool):
        super().__init__(name="uploader", daemon=True)
        self.dest = dest
        self.keep_local = keep_local
        self.backlog = UploadBacklog(dest)
        self._store_factory = store_factory
        self._finished: queue.SimpleQueue[tuple[Task, Result]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        #: Why the store cannot be used right now (None: it can, as far as anyone knows).
        self.outage: str | None = None
        self._pause = FIRST_OUTAGE_PAUSE
        if len(self.backlog):
            log.warning("%d finished download(s) from an earlier run wait for the file store", len(self.backlog))

    # -------------------------------------------------------- the runner's side

    def hold(self, task: Task, result: Result, reason: str | None) -> None:
        """A done download whose files could not go to the store: it waits, on disk."""
        self.backlog.add(task, result)
        if reason is not None:
            self._store_down(reason)
        self._wake.set()

    def finished(self) -> list[tuple[Task, Result]]:
        """Results the uploader completed since the last call: done (files in the store),
        or a transient failure when the store kept refusing the bytes."""
        done = []
        while True:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                return done

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(30)
        self.backlog.close()

    # ------------------------------------------------------------ its own loop

    def run(self) -> None:
        store = None
        while not self._stopping.is_set():
            entries = list(self.backlog.entries())
            if not entries:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                store = store or self._store_factory()
                for task, result in entries:
                    if self._stopping.is_set():
                        return
                    self._upload(store, task, result)
            except StoreUnavailable as error:
                self._store_down(str(error))
                if self._stopping.wait(self._pause):
                    return
                self._pause = min(self._pause * 2, MAX_OUTAGE_PAUSE)

    def _upload(self, store: FileStore, task: Task, result: Result) -> None:
        try:
            files = upload_with_retries(store, self.dest, task, result["files"], keep_local=self.keep_local)
        except StoreRejected as refusal:
            answer = {"task_id": task["id"], "status": "failed", "error_class": "transient", "error": str(refusal)}
        except FileNotFoundError as missing:  # removed from --dest while it waited
            answer = {"task_id": task["id"], "status": "failed", "error_class": "transient", "error": str(missing)}
        else:
            answer = {**result, "files": files}
            self._store_up()
        self.backlog.remove(task)
        self._finished.put((task, answer))

    def _store_down(self, reason: str) -> None:
        if self.outage is None:
            log.warning(
                "%s; finished downloads wait in %s and are reported once uploaded (%d waiting)",
                reason,
                self.dest,
                len(self.backlog),
            )
        self.outage = reason

    def _store_up(self) -> None:
        if self.outage is not None:
            log.warning("the file store is reachable again: uploading %d waiting download(s)", len(self.backlog))
        self.outage = None
        self._pause = FIRST_OUTAGE_PAUSE
