"""What a run tells: results sent to the coordinator in small batches, what each batch
came to (a tally), and the one summary line and exit status a run ends with."""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common.states import ResultStatus, TaskKind

from .coordinator import Coordinator, CoordinatorError

log = logging.getLogger("fetchfleet")

#: Exit status of a run stopped because the node cannot store files (disk full, read-only).
EXIT_NODE_FAULT = 4


@dataclass
class Tally:
    """What delivered results came to."""

    done: int = 0
    failed: Counter = field(default_factory=Counter)
    refused: int = 0
    undelivered: int = 0
    found: int = 0
    bytes: int = 0


@dataclass(kw_only=True)
class Summary(Tally):
    """A whole run: every tally added up, and what the run itself did."""

    kind: str
    site: str | None
    leases: int = 0
    tasks: int = 0
    released: int = 0
    #: Tasks answered without a job: from the metadata cache, or from the node's archive.
    shortcuts: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by: str | None = None
    retry_after: int | None = None
    #: Set when the node itself could not go on (disk full, read-only --dest).
    node_fault: str | None = None
    #: Done downloads left waiting for the file store on this node's disk, and why.
    held: int = 0
    held_because: str | None = None

    def count(self, tally: Tally | None) -> None:
        if tally is None:
            return
        self.done += tally.done
        self.failed.update(tally.failed)
        self.refused += tally.refused
        self.undelivered += tally.undelivered
        self.found += tally.found
        self.bytes += tally.bytes

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
            if self.shortcuts:
                parts.append(f"{self.shortcuts} from the cache")
        else:
            parts.append(human_bytes(self.bytes))
            if self.shortcuts:
                parts.append(f"{self.shortcuts} already on disk")
        if self.held:
            parts.append(f"{self.held} waiting on this node for the file store")
        stopped = f"; stopped by {self.stopped_by}" if self.stopped_by else ""
        if self.node_fault:
            stopped += f"; stopped: this node cannot store files ({self.node_fault})"
        elif self.held and self.held_because:
            stopped += f"; the file store is unavailable ({self.held_because})"
        return f"{what}: {', '.join(parts)} in {elapsed:.1f}s ({self.leases} lease(s)){stopped}"

    def exit_code(self) -> int:
        if self.stopped_by:
            return 128 + getattr(signal, self.stopped_by).value
        if self.node_fault or self.held:
            return EXIT_NODE_FAULT
        if self.failed or self.refused or self.undelivered:
            return 1
        return 0


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class ResultSender:
    """Submits results in small batches: a crash loses little, and the server sees few
    requests. Every call that may send says what the sent batch came to (a Tally), or
    None when nothing was delivered; ``buffer`` then keeps the results for a retry."""

    def __init__(self, coordinator: Coordinator, lease_id: str, batch: int = 25, every: float = 2.0):
        self.coordinator = coordinator
        self.lease_id = lease_id
        self.batch = batch
        self.every = every
        self.buffer: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, result: dict[str, Any]) -> Tally | None:
        self.buffer.append(result)
        return self.flush() if len(self.buffer) >= self.batch else None

    def flush_if_due(self) -> Tally | None:
        if self.buffer and time.monotonic() - self._last >= self.every:
            return self.flush()
        return None

    @property
    def delivered(self) -> bool:
        return not self.buffer

    def flush(self) -> Tally | None:
        self._last = time.monotonic()
        if not self.buffer:
            return Tally()
        try:
            answer = self.coordinator.submit(self.lease_id, self.buffer)
        except CoordinatorError as error:
            if error.status == 400:  # our own results are malformed: retrying cannot help
                log.error("the coordinator rejected %d result(s): %s", len(self.buffer), error.message)
                tally = Tally(undelivered=len(self.buffer))
                self.buffer.clear()
                return tally
            log.warning("could not submit %d result(s), will retry: %s", len(self.buffer), error.message)
            return None
        refused = set(answer.get("conflicts") or [])
        if refused:
            log.warning("%d result(s) refused: this lease no longer holds task(s) %s", len(refused), sorted(refused))
        tally = Tally()
        for result in self.buffer:
            if result["task_id"] in refused:
                tally.refused += 1
            elif result["status"] == ResultStatus.DONE:
                tally.done += 1
                tally.found += len(result.get("found") or ())
                tally.bytes += sum(f["size"] for f in result.get("files") or ())
            else:
                tally.failed[result["error_class"]] += 1
        self.buffer.clear()
        return tally
