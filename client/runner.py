"""The client loop: lease a batch, run its jobs in worker processes, submit results in
small batches as they finish, heartbeat meanwhile; repeat for ``--loop`` / ``--drain``.

Stopping: the first SIGINT/SIGTERM stops taking work, lets running jobs finish, submits
their results and releases the rest; a second one kills the running jobs first.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from common.states import FailureClass, ResultStatus

from . import worker
from .coordinator import Coordinator, CoordinatorError
from .engines import Failure
from .heartbeat import Heartbeat
from .kinds import KindOfWork
from .pool import WorkerPool
from .reporting import ResultSender, Summary
from .storage import wait_until_storable
from .trust import SiteVetting
from .uploads import UPLOAD_PENDING

log = logging.getLogger("fetchfleet")

ONCE, LOOP, DRAIN = "once", "loop", "drain"
#: Longest pause between lease requests when the queue is empty (--loop).
MAX_IDLE_SECONDS = 60


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
        work: KindOfWork,
        n: int,
        settings: dict[str, Any],
        site: str | None = None,
        jobs: int = 1,
        mode: str = ONCE,
        lease_seconds: int | None = None,
        progress: bool = False,
        stopper: Stopper | None = None,
        pool_factory: Callable[[int, dict[str, Any], dict[str, dict[str, Any]]], WorkerPool] = WorkerPool,
    ):
        self.coordinator = coordinator
        #: What differs between metadata and download tasks (``client.kinds``).
        self.work = work
        self.kind = work.kind
        self.dest = getattr(work, "dest", None)
        self.n = n
        self.site = site
        self.jobs = jobs
        self.mode = mode
        self.lease_seconds = lease_seconds
        self.settings = settings
        self.stopper = stopper or Stopper()
        #: Makes the worker pool (jobs, settings, sites): worker processes, or a test's threads.
        self.pool_factory = pool_factory
        self.summary = Summary(kind=self.kind, site=site)
        #: Results not yet delivered (coordinator unreachable): retried before every lease request.
        self.backlog: list[ResultSender] = []
        self.pool: WorkerPool | None = None
        #: Every site a lease describes is checked here first (``client.trust``).
        self.vetting = SiteVetting()
        self.active: dict[str, ActiveLease] = {}
        self.pending: dict[Future, tuple[dict, ActiveLease]] = {}
        #: Tasks of live leases that are done but held on the node (files waiting for the
        #: file store), by task id: reported when the work says they are complete.
        self.held: dict[int, tuple[dict, ActiveLease]] = {}
        #: Why this node cannot store files right now (None: it can).
        self.fault: str | None = None
        self.faults_in_a_row = 0
        self.bar = tqdm(
            total=0,
            unit="task",
            desc=f"{self.kind} {site or ''}".strip(),
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
                elif self._waiting_for_held():
                    self.stopper.graceful.wait(0.2)
                    self._collect_some()
                else:
                    self._close_finished()
                    if not self.more:
                        break
                    self.stopper.graceful.wait(max(0.0, min(self.next_lease - time.monotonic(), 1.0)))
            if self.stopper.hard.is_set():
                self._kill_pool()
        finally:
            if self.held:  # the file store is down: they stay in the node's backlog, released here
                self.summary.held = len(self.held)
                self.summary.held_because = self.work.holding_problem()
            self._end_all()
            self._deliver_backlog()
            self.summary.undelivered += sum(len(sender.buffer) for sender in self.backlog)
            self.summary.stopped_by = self.stopper.signal_name
            self.bar.close()
            if self.pool is not None:
                self.pool.close()
            self.work.close()
        return self.summary

    # ------------------------------------------------------------ the loop's steps

    def _notice_stop(self) -> None:
        """First signal: no new work, and tasks not yet started are handed back."""
        if self.stopper.graceful.is_set() and not self._stopping:
            self._stopping = True
            self.more = False
            self._cancel_waiting()

    def _waiting_for_held(self) -> bool:
        """Held tasks are waited for while they can complete soon; a --loop node also waits
        through a store outage (it keeps downloading meanwhile), a one-off run does not."""
        if not self.held:
            return False
        return (self.mode == LOOP and not self._stopping) or self.work.holding_problem() is None

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
        if not wait_until_storable(self.dest, self.stopper.graceful, self.fault, start=self.faults_in_a_row - 1):
            return False
        self.fault = None
        self.next_lease = 0.0
        return True

    def _deliver_backlog(self) -> None:
        """Results first, then new work: delivered before the lease expires, they still count."""
        for sender in self.backlog:
            self.summary.count(sender.flush())
        self.backlog = [sender for sender in self.backlog if not sender.delivered]

    def _pool_for(self, lease_sites: dict[str, dict[str, Any]]) -> WorkerPool:
        """Workers that know every accepted site; refused ones never reach them."""
        wanted = {name: self.vetting.accepted[name] for name in lease_sites if name in self.vetting.accepted}
        if self.pool is not None and self.pool.knows(wanted):
            return self.pool
        try:
            listed = self.coordinator.sites()
            if self.site is not None:  # a download run only ever leases its own site
                listed = {name: site for name, site in listed.items() if name == self.site}
            self.vetting.add(listed)
        except CoordinatorError as error:  # the lease described its own sites: enough to go on
            log.info("could not list the coordinator's sites: %s", error.message)
        self.vetting.add(lease_sites)  # the lease's own description of its sites wins
        sites = dict(self.vetting.accepted)
        if self.pool is not None:
            self.pool.close()
        self.pool = self.pool_factory(self.jobs, self.settings, sites)
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
            ResultSender(self.coordinator, lease["lease_id"]),
            heartbeat,
            {task["id"] for task in tasks},
        )
        self.active[active.id] = active
        self.vetting.add(lease["sites"])
        runnable = []
        for task in tasks:
            refusal = self.vetting.refusal_for(task)
            if refusal is None:
                runnable.append(task)
            else:
                self._finish(task, Failure(FailureClass.PERMANENT, refusal).as_result(task["id"]), active)
        shortcuts = self.work.shortcuts(runnable)  # answered without a job: no site request
        for task in runnable:
            if task["id"] in shortcuts:
                self.summary.shortcuts += 1
                self._finish(task, shortcuts[task["id"]], active)
            else:
                self._submit(lease["sites"], active, task, *self.work.job(task))

    def _submit(self, lease_sites: dict[str, dict[str, Any]], active: ActiveLease, task: dict, function, args) -> None:
        try:
            self.pending[self._pool_for(lease_sites).submit(function, *args)] = (task, active)
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
        self._collect_held()
        self._close_finished()
        for active in self.active.values():
            self.summary.count(active.sender.flush_if_due())

    def _collect_held(self) -> None:
        for task, result in self.work.completed():
            owner = self.held.pop(task["id"], None)
            if owner is not None:
                self._finish(owner[0], result, owner[1], fresh=True)
            elif result["status"] == ResultStatus.DONE:  # held by an earlier run: answered when it comes back
                self.work.remember(task, result)

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
        if fresh:
            result = self.work.settle(task, result)
        if result["status"] == UPLOAD_PENDING:  # stays unfinished until its files are in the store
            self.held[task["id"]] = (task, active)
            self.work.hold(task, result)
            return
        if fresh:
            self.work.remember(task, result)
            if result["status"] == ResultStatus.DONE:
                self.faults_in_a_row = 0
        if result["status"] == ResultStatus.FAILED:
            log.info("task %s (%s) failed: %s: %s", task["id"], task["url"], result["error_class"], result["error"])
        active.unfinished.discard(task["id"])
        self.summary.count(active.sender.add(result))
        self.bar.update(1)

    def _close_finished(self) -> None:
        for active in [active for active in self.active.values() if not active.unfinished]:
            self._end(active)

    def _end(self, active: ActiveLease) -> None:
        """Deliver what the lease produced and hand back what it did not do."""
        del self.active[active.id]
        for task_id in active.unfinished:
            self.held.pop(task_id, None)
        self.work.lease_ended()
        self.summary.count(active.sender.flush())
        if not active.sender.delivered:
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
