"""How a task changes, in one place, as pure functions of the task and what happened
(nothing here touches the database): the row a task starts as, a fresh start (the
inventory import and the operator's requeue reset a task the same way, with no old
result left behind to be counted again), and what a result makes of a leased task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common.states import FailureClass, TaskKind, TaskState

from .schedule import next_check

if TYPE_CHECKING:
    from .known import KnownSet
    from .policy import LeasePolicy
    from .sites import SiteRegistry


def fresh_start(now: datetime) -> dict[str, Any]:
    """A task queued again as if new: no attempts, no error, no result, available now."""
    return {
        "state": TaskState.QUEUED,
        "attempts": 0,
        "available_at": now,
        "lease_id": None,
        "error_class": None,
        "last_error": None,
        "last_error_at": None,
        "found_count": None,
        "known_count": None,
        "duplicate_of": None,
        "check_count": None,
        "done_by": None,
        "done_at": None,
        "updated_at": now,
    }


def new_metadata_task(
    item_id: int, site: str, url: str, priority: int, now: datetime, *, check_every: int | None = None
) -> dict[str, Any]:
    """The row of a task that finds what exists for an inventory item on one site (and, for
    a subscription, checks it again every ``check_every`` seconds)."""
    return {**_new_task(TaskKind.METADATA, site, item_id, url, priority, now), "check_every": check_every}


def new_download_task(
    item_id: int | None,
    site: str,
    remote_id: str,
    url: str | None,
    payload: dict[str, Any] | None,
    priority: int,
    now: datetime,
) -> dict[str, Any]:
    """The row of a task that fetches one found post (deduplicated by site and remote id)."""
    row = _new_task(TaskKind.DOWNLOAD, site, item_id, url, priority, now)
    return {**row, "remote_id": remote_id, "payload": payload, "duplicate_of": None, "done_at": None}


def already_held(row: dict[str, Any], file_id: int | None, now: datetime) -> dict[str, Any]:
    """A new download task whose content the archive already holds: it ends ``duplicate``
    at once (never leased: no request to the site), pointing at the file that has it."""
    return {**row, "state": TaskState.DUPLICATE, "duplicate_of": file_id, "done_at": now}


def _new_task(
    kind: TaskKind, site: str, item_id: int | None, url: str | None, priority: int, now: datetime
) -> dict[str, Any]:
    return {
        "kind": kind,
        "site": site,
        "item_id": item_id,
        "url": url,
        "state": TaskState.QUEUED,
        "priority": priority,
        "attempts": 0,
        "available_at": now,
        "created_at": now,
        "updated_at": now,
    }


#: A file record's ``video`` (what the node's probe found), column by column.
VIDEO_COLUMNS = ("duration", "width", "height", "vcodec", "acodec", "container")


def file_rows(task_id: int, client_id: int, records, now: datetime, *, video: bool = False) -> list[dict[str, Any]]:
    """The file records of a done download, as rows (built before the write transaction);
    ``video``: with the probe's columns (when any record of the batch has them, so every
    row of a batch has one shape)."""
    rows = [
        {
            "task_id": task_id,
            "client_id": client_id,
            "path": record["path"],
            "size": record["size"],
            "sha256": record["sha256"].lower(),
            "md5": record["md5"].lower() if record.get("md5") else None,
            "mime": record.get("mime"),
            "phash": record.get("phash"),
            "dhash": record.get("dhash"),
            "store_key": record.get("store_key"),
            "on_node": record.get("kept", True),
            "created_at": now,
        }
        for record in records
    ]
    if video:
        for row, record in zip(rows, records, strict=True):
            probed = record.get("video") or {}
            row.update({name: probed.get(name) for name in VIDEO_COLUMNS})
            if row["duration"] is not None:  # whole milliseconds: what the kept video time adds up
                row["duration"] = round(row["duration"], 3)
    return rows


# ------------------------------------------------------------- what a result makes


@dataclass
class Change:
    """A leased task's new values after a result (every row the same keys: the batch goes
    out as one executemany), the download tasks it found, and a site cooldown it asks for."""

    values: dict[str, Any]
    new_downloads: list[dict[str, Any]] = field(default_factory=list)
    cooldown: tuple[datetime, str] | None = None
    #: Found posts an anchor names: no task, only a count (and a ``file.skipped`` event).
    known_posts: list[dict[str, Any]] = field(default_factory=list)


def _recorded(task: Any, lease_id: str, now: datetime) -> dict[str, Any]:
    """The values every result sets. The last error a task saw stays on it after a
    success: "done after a 500" is history worth keeping."""
    return {
        "id": task.id,
        "state": task.state,
        "attempts": task.attempts,
        "available_at": now,
        "lease_id": None,
        "result_lease_id": lease_id,
        "error_class": task.error_class,
        "last_error": task.last_error,
        "last_error_at": task.last_error_at,
        "found_count": None,
        "known_count": None,
        "check_count": task.check_count,
        "done_by": None,
        "done_at": None,
        "updated_at": now,
    }


def check_interval(task: Any, sites: SiteRegistry, policy: LeasePolicy) -> int | None:
    """Seconds between checks of a metadata task: its item's, else its site's, else the
    global interval; None: checked once."""
    if task.kind != TaskKind.METADATA:
        return None
    site = sites.get(task.site)
    return task.check_every or (site.check_every if site is not None else None) or policy.check_every


def is_full_check(task: Any, policy: LeasePolicy) -> bool:
    """The first check, and every ``full_check_every``-th, goes to the end."""
    number = (task.check_count or 0) + 1
    return number == 1 or number % policy.full_check_every == 0


def _checked_again(values: dict[str, Any], task: Any, interval: int, now: datetime) -> None:
    """A subscription's check is over (found, found nothing, or failed for good): it waits
    for the next one, with fresh attempts."""
    values.update(
        state=TaskState.SCHEDULED,
        attempts=0,
        available_at=next_check(now, interval),
        check_count=(task.check_count or 0) + 1,
    )


def metadata_done(
    task: Any,
    result: dict[str, Any],
    *,
    lease_id: str,
    done_by: int,
    policy: LeasePolicy,
    sites: SiteRegistry,
    now: datetime,
    known: KnownSet | None = None,
) -> Change:
    """A resolution: done with the download tasks of what it found, or, finding nothing,
    tried again later (not found for good after the last attempt).

    A found post the archive knows (an anchor names it, by post or URL) becomes no task,
    only a count; one whose metadata carries a hash the archive holds becomes a task that
    is already ``duplicate``."""
    values = _recorded(task, lease_id, now)
    things = result["found"]
    if things:
        downloads = []
        skipped: list[dict[str, Any]] = []
        for thing in things:
            site = sites.get(thing["site"])
            remote_id = str(thing["remote_id"])
            metadata = thing.get("metadata") or {}
            url = site.download_url_for(remote_id, metadata, thing.get("url"))
            if known is not None and known.names_post(site.name, remote_id, url):
                skipped.append({"site": site.name, "remote_id": remote_id, "url": url})
                continue
            row = new_download_task(task.item_id, site.name, remote_id, url, metadata, task.priority, now)
            holder = known.holder_of(site.published_hashes(metadata)) if known is not None else None
            downloads.append(row if holder is None else already_held(row, holder.file_id, now))
        values.update(
            state=TaskState.DONE,
            done_by=done_by,
            done_at=now,
            found_count=len(things),
            known_count=len(skipped),
            check_count=(task.check_count or 0) + 1,
        )
        if (interval := check_interval(task, sites, policy)) is not None:
            _checked_again(values, task, interval, now)
        return Change(values, downloads, known_posts=skipped)
    values.update(found_count=0, last_error="nothing found", last_error_at=now)
    if (interval := check_interval(task, sites, policy)) is not None:
        _checked_again(values, task, interval, now)  # nothing there yet: look again next time
        return Change(values)
    attempts = task.attempts + 1
    values["attempts"] = attempts
    if attempts >= policy.max_attempts[task.kind]:
        values["state"] = TaskState.NOT_FOUND
    else:
        values.update(state=TaskState.QUEUED, available_at=now + policy.not_found_delay(attempts))
    return Change(values)


def failed(
    task: Any,
    result: dict[str, Any],
    *,
    lease_id: str,
    policy: LeasePolicy,
    now: datetime,
    sites: SiteRegistry | None = None,
) -> Change:
    """A failure by its class: permanent is dead at once; transient retries with backoff
    until the last attempt; rate limited charges nothing and cools the whole site down.
    A subscription's check that fails for good is not the end of it: it is checked again
    at its next interval (the error stays on it, for the report)."""
    values = _recorded(task, lease_id, now)
    error_class = FailureClass(result["error_class"])
    message = (result.get("error") or error_class.value)[:2000]
    values.update(error_class=error_class, last_error=message, last_error_at=now)
    if error_class == FailureClass.RATE_LIMITED:
        # Not the task's fault: no attempt is charged; the site waits, the task with it.
        until = now + policy.cooldown(result.get("retry_after"))
        values.update(state=TaskState.QUEUED, available_at=until)
        return Change(values, cooldown=(until, message))
    attempts = task.attempts + 1
    values["attempts"] = attempts
    if error_class == FailureClass.PERMANENT or attempts >= policy.max_attempts[task.kind]:
        interval = check_interval(task, sites, policy) if sites is not None else None
        if interval is not None:
            _checked_again(values, task, interval, now)
        else:
            values["state"] = TaskState.DEAD
    else:
        values.update(state=TaskState.QUEUED, available_at=now + policy.retry_delay(attempts))
    return Change(values)
