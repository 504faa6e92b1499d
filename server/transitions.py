"""The rows a task starts as and the values it takes on a fresh start, in one place:
leasing, the inventory import and the operator's requeue all build them here, so a
task reset by any of them looks the same (no finished-by, finished-at or found count
left behind to be counted again)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.states import TaskKind, TaskState


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
        "done_by": None,
        "done_at": None,
        "updated_at": now,
    }


def new_metadata_task(item_id: int, site: str, url: str, priority: int, now: datetime) -> dict[str, Any]:
    """The row of a task that finds what exists for an inventory item on one site."""
    return _new_task(TaskKind.METADATA, site, item_id, url, priority, now)


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
    return {**row, "remote_id": remote_id, "payload": payload}


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
