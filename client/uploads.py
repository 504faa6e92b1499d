"""Finished downloads into the central file store (``FILE_STORE``), and what waits for it.

Every done download of a node with a store goes through one upload backlog on disk
(``DEST/.fetchfleet/uploads.sqlite3``) before it is reported: the :class:`Uploader`'s
threads (one boto3 client in the node process, off the download workers' path, so a
worker starts its next download at once) put its files and sidecars into the store,
and only then is the task reported ``done``. When the store cannot be reached, the
files stay in ``--dest``, the backlog grows and is worked off when the store is back,
also after a restart: nothing is lost in between.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.file_store import FileStore, Stored, StoreRejected, StoreUnavailable, sidecar_key

from .sidecar import sidecar_path

log = logging.getLogger("fetchfleet")

#: A result status that stays on the node: downloaded, waiting for the store.
UPLOAD_PENDING = "upload_pending"
#: Uploads at once (threads sharing one client): the work is mostly waiting on the store.
UPLOAD_THREADS = 4
#: A store that refused the bytes (changed in flight) is asked again after these pauses.
REJECTED_PAUSES = (0.5, 1.0, 2.0)
#: How long the uploader waits before asking an unreachable store again (doubling).
FIRST_OUTAGE_PAUSE, MAX_OUTAGE_PAUSE = 2.0, 30.0

Task = dict[str, Any]
Result = dict[str, Any]


def put_with_sidecar(
    store: FileStore, path: Path, record: dict, *, site: str, remote_id: str | None, task_id: int
) -> Stored:
    """Put one file (``record``: its size, sha256, mime) and its post's sidecar into the store.
    A new object has no sidecar yet; a known one may have this post's already (a second node)."""
    put = store.put_file(path, record["sha256"], record["size"], mime=record.get("mime"))
    sidecar = sidecar_path(path)
    key = sidecar_key(put.key, site, remote_id, task_id)
    if sidecar.is_file() and (put.uploaded or not store.holds(key)):
        store.put_bytes(key, sidecar.read_bytes())
    return put


def upload_files(store: FileStore, dest: Path, task: Task, files: list[dict], *, keep_local: bool) -> list[dict]:
    """Put every file of a done download, and its sidecar, into the store; give the file
    records back with their ``store_key``. Local copies go only after *every* file is
    in the store (``keep_local`` False). Raises StoreUnavailable / StoreRejected."""
    stored = []
    for record in files:
        put = put_with_sidecar(
            store, dest / record["path"], record, site=task["site"], remote_id=task.get("remote_id"), task_id=task["id"]
        )
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
    process. One row per post; shared by the runner and the uploader's threads."""

    def __init__(self, dest: Path):
        folder = dest / ".fetchfleet"
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "uploads.sqlite3", timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # survives the process, not a power cut
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


class Uploader:
    """Works off the upload backlog in the node process, a few posts at a time: asks an
    unreachable store again with backoff, says once per outage that it is down and once
    that it is back. What it finishes comes out of :meth:`finished`."""

    def __init__(self, store: FileStore, dest: Path, *, keep_local: bool, threads: int = UPLOAD_THREADS):
        self.store = store
        self.dest = dest
        self.keep_local = keep_local
        self.backlog = UploadBacklog(dest)
        self._queue: queue.Queue[tuple[Task, Result] | None] = queue.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._finished: queue.SimpleQueue[tuple[Task, Result]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        #: Why the store cannot be used right now (None: it can, as far as anyone knows).
        self.outage: str | None = None
        self._pause = FIRST_OUTAGE_PAUSE
        self._threads = [threading.Thread(target=self._work, name=f"uploader-{n}", daemon=True) for n in range(threads)]
        earlier = list(self.backlog.entries())
        if earlier:
            log.warning("%d finished download(s) from an earlier run wait for the file store", len(earlier))
        for task, result in earlier:
            self._enqueue(task, result)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    # -------------------------------------------------------- the runner's side

    def hold(self, task: Task, result: Result) -> None:
        """A done download whose files must go to the store before it is reported."""
        self.backlog.add(task, result)  # first on disk: from here on nothing is lost
        self._enqueue(task, result)

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
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(30)
        self.backlog.close()
        self.store.close()

    # ------------------------------------------------------------ its threads

    def _enqueue(self, task: Task, result: Result) -> None:
        post = (task["site"], UploadBacklog._post(task))
        with self._lock:
            if post in self._queued:
                return
            self._queued.add(post)
        self._queue.put((task, result))

    def _work(self) -> None:
        while not self._stopping.is_set():
            entry = self._queue.get()
            if entry is None:
                return
            task, result = entry
            try:
                answer = self._upload(task, result)
            except StoreUnavailable as error:
                self._store_down(str(error))
                self._stopping.wait(self._pause)
                self._pause = min(self._pause * 2, MAX_OUTAGE_PAUSE)
                self._queue.put(entry)  # stays queued (and on disk): asked again after the pause
                continue
            self.backlog.remove(task)
            with self._lock:
                self._queued.discard((task["site"], UploadBacklog._post(task)))
            self._finished.put((task, answer))

    def _upload(self, task: Task, result: Result) -> Result:
        """The done result with its files' store keys, or a transient failure when the store
        kept refusing the bytes or the files cannot be read (removed from --dest meanwhile)."""
        try:
            files = upload_with_retries(self.store, self.dest, task, result["files"], keep_local=self.keep_local)
        except (StoreRejected, OSError) as problem:
            return {"task_id": task["id"], "status": "failed", "error_class": "transient", "error": str(problem)[:500]}
        self._store_up()
        return {**result, "task_id": task["id"], "files": files}

    def _store_down(self, reason: str) -> None:
        with self._lock:
            if self.outage is None:
                log.warning(
                    "%s; finished downloads wait in %s and are reported once uploaded (%d waiting)",
                    reason,
                    self.dest,
                    len(self.backlog),
                )
            self.outage = reason

    def _store_up(self) -> None:
        with self._lock:
            if self.outage is not None:
                log.warning("the file store is reachable again: uploading %d waiting download(s)", len(self.backlog))
            self.outage = None
            self._pause = FIRST_OUTAGE_PAUSE
