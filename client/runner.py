"""The client loop: lease a batch, run its jobs in worker processes, submit results in
small batches as they finish, heartbeat meanwhile; repeat for ``--loop`` / ``--drain``.

Stopping: the first SIGINT/SIGTERM stops taking work, lets running jobs finish, submits
their results and releases the rest; a second one kills the running jobs first.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.states import FailureClass, TaskKind

from . import worker
from .archive import Archive
from .cache import GuardedCache
from .coordinator import Coordinator, CoordinatorError
from .engines import Failure
from .heartbeat import Heartbeat
from .pool import WorkerPool
from .storage import backoff_pauses, storage_problem
from .trust import SiteVetting

log = logging.getLogger("fetchfleet")

ONCE, LOOP, DRAIN = "once", "loop", "drain"
#: Longest pause between lease requests when the queue is empty (--loop).
MAX_IDLE_SECONDS = 60
#: Exit status of a run stopped because the node cannot store files (disk full, read-only).
EXIT_NODE_FAULT = 4


@dataclass
class Summary:
    kind: str
    site: str | None
    leases: int = 0
    tasks: int = 0
    done: int = 0
    failed: Counter = field(default_factory=Counter)
    refused: int = 0
    released: int = 0
    undelivered: int = 0
    found: int = 0
    from_cache: int = 0
    from_archive: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by: str | None = None
    retry_after: int | None = None
    #: Set when the node itself could not go on (disk full, read-only --dest).
    node_fault: str | None = None

    def line(self) -> str:
        what = f"{self.kind} {self.site}" if self.site else self.kind
        elapsed = time.monotonic() - self.started
        if not self.tasks:
            hint = f" (the coordinator suggests asking again in {self.retry_after}s)" if self.retry_after else ""
            return f"{what}: nothing to do{hint}"
        failed = sum(self.failed.values())
        parts = [f"{self.done} done", f"{failed} failed"]
        if failed:
            parts[-1] += " (" + ", ".join(f"{count} {name}" for name, count in sorted(self.failed.items())) + ")"
        if self.refused:
            parts.append(f"{self.refused} refused (lease lost)")
        if self.released:
            parts.append(f"{self.released} released")
        if self.undelivered:
            parts.append(f"{self.undelivered} results undelivered")
        if self.kind == TaskKind.METADATA:
            parts.append(f"{self.found} things found")
            if self.from_cache:
                parts.append(f"{self.from_cache} from the cache")
        else:
            parts.append(human_bytes(self.bytes))
            if self.from_archive:
                parts.append(f"{self.from_archive} already on disk")
        stopped = f"; stopped by {self.stopped_by}" if self.stopped_by else ""
        if self.node_fault:
            stopped += f"; stopped: this node cannot store files ({self.node_fault})"
        return f"{what}: {', '.join(parts)} in {elapsed:.1f}s ({self.leases} lease(s)){stopped}"

    def exit_code(self) -> int:
        if self.stopped_by:
            return 128 + getattr(signal, self.stopped_by).value
        if self.node_fault:
            return EXIT_NODE_FAULT
        if self.failed or self.refused or self.undelivered:
            return 1
        return 0


def human_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class Stopper:
    """SIGINT/SIGTERM once: stop gracefully; twice: stop now."""

    def __init__(self):
        self.graceful = threading.Event()
        self.hard = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.graceful.is_set():
            self.hard.set()
            log.warning("stopping now: killing running jobs and releasing their tasks")
            return
        self.signal_name = signal.Signals(signum).name
        self.graceful.set()
        log.warning("stopping: no new work; running jobs finish, the rest is released (again to stop now)")


def _passing(error: CoordinatorError) -> bool:
    """Trouble that goes away by itself: no answer at all, or a server error."""
    return error.status is None or error.status >= 500


class ResultSender:
    """Submits results in small batches: a crash loses little, and the server sees few requests."""

    def __init__(self, coordinator: Coordinator, lease_id: str, summary: Summary, batch: int = 25, every: float = 2.0):
        self.coordinator = coordinator
        self.lease_id = lease_id
        self.summary = summary
        self.batch = batch
        self.every = every
        self.buffer: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, result: dict[str, Any]) -> None:
        self.buffer.append(result)
        if len(self.buffer) >= self.batch:
            self.flush()

    def flush_if_due(self) -> None:
        if self.buffer and time.monotonic() - self._last >= self.every:
            self.flush()

    def flush(self) -> bool:
        self._last = time.monotonic()
        if not self.buffer:
            return True
        try:
            answer = self.coordinator.submit(self.lease_id, self.buffer)
        except CoordinatorError as error:
            if error.status == 400:  # our own results are malformed: retrying cannot help
                log.error("the coordinator rejected %d result(s): %s", len(self.buffer), error.message)
                self.summary.undelivered += len(self.buffer)
                self.buffer.clear()
            else:
                log.warning("could not submit %d result(s), will retry: %s", len(self.buffer), error.message)
            return False
        refused = set(answer.get("conflicts") or [])
        if refused:
            log.warning("%d result(s) refused: this lease no longer holds task(s) %s", len(refused), sorted(refused))
        for result in self.buffer:
            if result["task_id"] in refused:
                self.summary.refused += 1
            elif result["status"] == "done":
                self.summary.done += 1
                self.summary.found += len(result.get("found") or ())
                self.summary.bytes += sum(f["size"] for f in result.get("files") or ())
            else:
                self.summary.failed[result["error_class"]] += 1
        self.buffer.clear()
        return True


@dataclass
class ActiveLease:
    """A lease being worked on: its results go out through its own sender."""

    id: str
    sender: ResultSender
    heartbeat: Heartbeat
    unfinished: set[int]


class Runner:
    """Keeps the worker pool busy across leases: the next batch is leased as soon as no
    more tasks wait than there are workers, so no worker idles at a lease boundary."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        kind: str,
        n: int,
        settings: dict[str, Any],
        site: str | None = None,
        jobs: int = 1,
        dest: Path | None = None,
        mode: str = ONCE,
        lease_seconds: int | None = None,
        progress: bool = False,
        stopper: Stopper | None = None,
        cache: GuardedCache | None = None,
    ):
        self.coordinator = coordinator
        self.kind = kind
        self.n = n
        self.site = site
        self.jobs = jobs
        self.dest = dest
        self.mode = mode
        self.lease_seconds = lease_seconds
        self.settings = settings
        self.stopper = stopper or Stopper()
        self.summary = Summary(kind, site)
        #: Results not yet delivered (coordinator unreachable): retried before every lease request.
        self.backlog: list[ResultSender] = []
        self.pool: WorkerPool | None = None
        self.archive = Archive(dest) if kind == TaskKind.DOWNLOAD and dest is not None else None
        #: Metadata runs consult it before touching a site; fresh resolutions go into it.
        self.cache = cache if kind == TaskKind.METADATA else None
        self._resolved: list[tuple[str, str, list[dict]]] = []
        #: Every site a lease describes is checked here first (``client.trust``).
        self.vetting = SiteVetting()
        self.active: dict[str, ActiveLease] = {}
        self.pending: dict[Future, tuple[dict, ActiveLease]] = {}
        #: Why this node cannot store files right now (None: it can).
        self.fault: str | None = None
        self.faults_in_a_row = 0
        self.bar = tqdm(
            total=0,
            unit="task",
            desc=f"{kind} {site or ''}".strip(),
            disable=not progress,
            dynamic_ncols=True,
            leave=True,
        )

    # ------------------------------------------------------------------ the loop

    def run(self) -> Summary:
        """Lease, run, collect, until the mode says stop; then deliver and release."""
        self.more = True  # may we ask for more work?
        self.next_lease = 0.0  # monotonic time before which no lease is asked for (empty queue, outage)
        self.outages = 0
        self._stopping = False
        try:
            while not self.stopper.hard.is_set():
                self._notice_stop()
                if self.fault is not None:
                    if self.pending:
                        self._collect_some()
                    elif not self._recover_from_fault():
                        break
                elif self.more and len(self.pending) <= self.jobs and time.monotonic() >= self.next_lease:
                    self._lease_more()
                elif self.pending:
                    self._collect_some()
                else:
                    self._close_finished()
                    if not self.more:
                        break
                    self.stopper.graceful.wait(max(0.0, min(self.next_lease - time.monotonic(), 1.0)))
            if self.stopper.hard.is_set():
                self._kill_pool()
        finally:
            self._end_all()
            self._deliver_backlog()
            self.summary.undelivered += sum(len(sender.buffer) for sender in self.backlog)
            self.summary.stopped_by = self.stopper.signal_name
            self.bar.close()
            if self.pool is not None:
                self.pool.close()
            if self.archive is not None:
                self.archive.close()
            if self.cache is not None:
                self.cache.close()
        return self.summary

    # ------------------------------------------------------------ the loop's steps

    def _notice_stop(self) -> None:
        """First signal: no new work, and tasks not yet started are handed back."""
        if self.stopper.graceful.is_set() and not self._stopping:
            self._stopping = True
            self.more = False
            self._cancel_waiting()

    def _lease_more(self) -> None:
        self._deliver_backlog()
        try:
            lease = self.coordinator.lease(self.kind, self.n, site=self.site, lease_seconds=self.lease_seconds)
        except CoordinatorError as error:
            # A --loop node outlives coordinator trouble (down, restarting, answering 5xx);
            # a one-off run reports and stops, and so does everyone on a fatal answer.
            if self.mode != LOOP or not _passing(error):
                raise
            self.outages += 1
            pause = min(5 * 2 ** (self.outages - 1), MAX_IDLE_SECONDS)
            log.warning("%s; trying again in %ds", error.message, pause)
            self.next_lease = time.monotonic() + pause
        else:
            self.outages = 0
            if lease["tasks"]:
                self._start(lease)
                self.more = self.mode != ONCE
            else:
                self.summary.retry_after = lease.get("retry_after")
                self.more = self.mode == LOOP
                pause = min(lease.get("retry_after") or MAX_IDLE_SECONDS, MAX_IDLE_SECONDS)
                self.next_lease = time.monotonic() + pause
        self._close_finished()

    def _fail_node(self, message: str) -> None:
        """The node cannot store files: stop taking work; what has not started is handed back."""
        if self.fault is None:
            self.fault = message
            log.error(
                "this node cannot store files in %s: %s; its tasks are handed back, uncharged", self.dest, message
            )
            self._cancel_waiting()

    def _recover_from_fault(self) -> bool:
        """Release what the fault left unfinished; with --loop wait until the disk takes
        files again (True: go on), else stop (False)."""
        self._end_all()
        if self.mode != LOOP:
            self.summary.node_fault = self.fault
            return False
        self.faults_in_a_row += 1  # a disk that fills again at once is given longer each time
        for pause in backoff_pauses(self.faults_in_a_row - 1):
            log.warning("waiting %ds before checking %s again", pause, self.dest)
            if self.stopper.graceful.wait(pause):
                return False
            problem = storage_problem(self.dest)
            if problem is None:
                log.warning("%s takes files again: resuming", self.dest)
                self.fault = None
                self.next_lease = 0.0
                return True
            log.warning("%s still cannot store files: %s", self.dest, problem)
        return False

    def _deliver_backlog(self) -> None:
        """Results first, then new work: delivered before the lease expires, they still count."""
        self.backlog = [sender for sender in self.backlog if not sender.flush()]

    def _pool_for(self, lease_sites: dict[str, dict[str, Any]]) -> WorkerPool:
        """Workers that know every accepted site; refused ones never reach them."""
        wanted = {name: self.vetting.accepted[name] for name in lease_sites if name in self.vetting.accepted}
        if self.pool is not None and self.pool.knows(wanted):
            return self.pool
        try:
            self.vetting.add(self.coordinator.sites())
        except CoordinatorError as error:  # the lease described its own sites: enough to go on
            log.info("could not list the coordinator's sites: %s", error.message)
        self.vetting.add(lease_sites)  # the lease's own description of its sites wins
        sites = dict(self.vetting.accepted)
        if self.pool is not None:
            self.pool.close()
        self.pool = WorkerPool(self.jobs, self.settings, sites)
        return self.pool

    # ------------------------------------------------------------ one lease's life

    def _start(self, lease: dict[str, Any]) -> None:
        tasks = lease["tasks"]
        self.summary.leases += 1
        self.summary.tasks += len(tasks)
        self.bar.total += len(tasks)
        self.bar.refresh()
        expires = datetime.fromisoformat(lease["expires_at"])
        heartbeat = Heartbeat(self.coordinator, lease["lease_id"], (expires - datetime.now(UTC)).total_seconds())
        heartbeat.start()
        active = ActiveLease(
            lease["lease_id"],
            ResultSender(self.coordinator, lease["lease_id"], self.summary),
            heartbeat,
            {task["id"] for task in tasks},
        )
        self.active[active.id] = active
        self.vetting.add(lease["sites"])
        refusals = {task["id"]: self.vetting.refusal_for(task) for task in tasks}
        for task in tasks:
            if refusals[task["id"]] is not None:
                result = Failure(FailureClass.PERMANENT, refusals[task["id"]]).as_result(task["id"])
                self._finish(task, result, active)
        tasks = [task for task in tasks if refusals[task["id"]] is None]
        cached = self.cache.lookup((task["site"], task["url"]) for task in tasks) if self.cache else {}
        for task in tasks:
            found = cached.get((task["site"], task["url"]))
            if found is not None:  # another node (or this one) resolved it recently: no site request
                self.summary.from_cache += 1
                self._finish(task, {"task_id": task["id"], "status": "done", "found": found}, active)
                continue
            if self.kind == TaskKind.DOWNLOAD:
                recorded = self.archive.lookup(task["site"], task.get("remote_id"))
                if recorded is not None:
                    self.summary.from_archive += 1
                    self._finish(task, {"task_id": task["id"], "status": "done", "files": recorded}, active)
                    continue
                self._submit(lease["sites"], active, task, worker.download, task, str(self.dest))
            else:
                self._submit(lease["sites"], active, task, worker.resolve, task)

    def _submit(self, lease_sites: dict[str, dict[str, Any]], active: ActiveLease, task: dict, *job) -> None:
        try:
            self.pending[self._pool_for(lease_sites).submit(*job)] = (task, active)
        except BrokenProcessPool as exc:
            self._worker_died(task, active, exc)

    def _collect_some(self) -> None:
        finished, _ = wait(self.pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for future in finished:
            task, active = self.pending.pop(future)
            try:
                result = future.result()
            except CancelledError:
                continue
            except BrokenProcessPool as exc:
                self._worker_died(task, active, exc)
                continue
            self._finish(task, result, active, fresh=True)
        self._close_finished()
        for active in self.active.values():
            active.sender.flush_if_due()

    def _worker_died(self, task: dict, active: ActiveLease, exc: BaseException) -> None:
        """A worker died (out of memory?) or could not start: every pending task fails like
        this one, as a transient failure, and the next job gets new workers."""
        self._discard_pool()
        result = Failure(FailureClass.TRANSIENT, f"worker process died: {exc}").as_result(task["id"])
        self._finish(task, result, active, fresh=True)

    def _finish(self, task: dict, result: dict, active: ActiveLease, fresh: bool = False) -> None:
        if result["status"] == worker.NODE_FAULT:  # stays unfinished: released, never charged
            self._fail_node(result["error"])
            return
        if result["status"] == "done" and self.archive is not None:
            self.faults_in_a_row = 0
            try:
                self.archive.record(task["site"], task.get("remote_id"), result["files"])
            except sqlite3.OperationalError as error:  # "database or disk is full": the files stand
                log.warning("could not note task %s in the node archive: %s", task["id"], error)
        elif fresh and result["status"] == "done" and self.cache is not None:
            self._resolved.append((task["site"], task["url"], result["found"]))
        elif result["status"] == "failed":
            log.info("task %s (%s) failed: %s: %s", task["id"], task["url"], result["error_class"], result["error"])
        active.unfinished.discard(task["id"])
        active.sender.add(result)
        self.bar.update(1)

    def _close_finished(self) -> None:
        for active in [active for active in self.active.values() if not active.unfinished]:
            self._end(active)

    def _end(self, active: ActiveLease) -> None:
        """Deliver what the lease produced and hand back what it did not do."""
        del self.active[active.id]
        if self.cache is not None:
            self.cache.store(self._resolved)
            self._resolved = []
        if not active.sender.flush():
            self.backlog.append(active.sender)
        active.heartbeat.stop()
        if active.unfinished and not active.heartbeat.lost.is_set():
            try:
                self.summary.released += len(self.coordinator.release(active.id, sorted(active.unfinished)))
            except CoordinatorError as error:
                log.warning("could not release %d task(s): %s", len(active.unfinished), error.message)

    def _end_all(self) -> None:
        for active in list(self.active.values()):
            self._end(active)

    # -------------------------------------------------------------------- stopping

    def _cancel_waiting(self) -> None:
        """Graceful stop: tasks not yet started are dropped (and released); running ones finish."""
        for future in list(self.pending):
            if future.cancel():
                del self.pending[future]

    def _discard_pool(self) -> None:
        """Kill the workers now; the next job that needs one starts a new pool."""
        if self.pool is not None:
            self.pool.kill()
            self.pool = None

    def _kill_pool(self) -> None:
        """Hard stop: running jobs end now; their tasks are released with the rest."""
        self._discard_pool()
        for future in list(self.pending):
            if not future.done():
                del self.pending[future]
