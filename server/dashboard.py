"""What ``/dashboard`` shows, as one JSON snapshot: per site its tasks by state, in-flight
against its limit, cooldown and pause; per node what it did in the last hour and whether
it went silent; the last 24 hours minute by minute; recent errors; the newest dead tasks.

A snapshot is reused for ``DASHBOARD_REFRESH_SECONDS`` by every dashboard a process
serves, so open dashboards cost one set of queries per process per refresh, not one per
viewer. Counts, the last hour and the 24-hour series come from the kept counts
(``server.counts``): a snapshot costs the same at any size of the archive.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.states import LeaseState, TaskKind, TaskState

from .counts import minute_of, minutes_since, task_counts
from .database import read_only, utcnow
from .models import ApiKey, Lease, SiteState, Task
from .sites import SiteRegistry
from .stats import recent_errors

SERIES_MINUTES = 24 * 60
RECENT = timedelta(hours=1)
#: A node not seen for this long is flagged silent.
SILENT_AFTER = timedelta(minutes=10)
DEAD_LISTED = 50


def series(session: Session, now: datetime) -> dict[str, Any]:
    """Tasks done and bytes recorded per minute over the last 24 hours, from the kept
    per-minute counts."""
    start = minute_of(now) - timedelta(minutes=SERIES_MINUTES - 1)
    per_minute: dict[datetime, list[int]] = {}
    for minute, kind, _client, done, size in minutes_since(session, start):
        counts = per_minute.setdefault(minute, [0, 0, 0])
        counts[0 if kind == TaskKind.DOWNLOAD else 1] += done
        counts[2] += size
    rows = [per_minute.get(start + timedelta(minutes=n), [0, 0, 0]) for n in range(SERIES_MINUTES)]
    return {
        "start": start.isoformat(),
        "step_seconds": 60,
        "downloads": [row[0] for row in rows],
        "metadata": [row[1] for row in rows],
        "bytes": [row[2] for row in rows],
    }


class Dashboard:
    """Snapshots for ``/dashboard/data``, reused for ``refresh_seconds``."""

    def __init__(self, refresh_seconds: float):
        self.refresh_seconds = refresh_seconds
        self._snapshots: dict[bool, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def snapshot(self, session: Session, sites: SiteRegistry, *, full: bool) -> dict[str, Any]:
        """``full``: also the nodes, error texts and dead tasks (which name URLs): for key holders."""
        with self._lock:
            taken = self._snapshots.get(full)
            if taken is not None and time.monotonic() - taken[0] < self.refresh_seconds:
                return taken[1]
        data = collect(session, sites, full=full)
        with self._lock:
            self._snapshots[full] = (time.monotonic(), data)
        return data

    def forget(self) -> None:
        """After an action: the next refresh shows its effect."""
        with self._lock:
            self._snapshots.clear()


def collect(session: Session, sites: SiteRegistry, *, full: bool, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    read_only(session)
    data: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "sites": _sites(session, sites, now),
        "throughput": series(session, now),
        "full": full,
    }
    if full:
        data["nodes"] = _nodes(session, now)
        data["errors"] = _errors(session, now)
        data["dead"] = _dead(session)
    session.commit()
    return data


def _sites(session: Session, sites: SiteRegistry, now: datetime) -> list[dict[str, Any]]:
    """Tasks by kind and state per site (the kept counts); a queued task that failed
    before counts as retrying."""
    per_site: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return per_site.setdefault(
            name, {"name": name, "download": {}, "metadata": {}, "cooldown_until": None, "paused": False}
        )

    for kind, site, state, count in task_counts(session, retrying=True):
        entry(site)[kind][state] = count
    for name in sites.names():
        entry(name)
    for state in session.execute(select(SiteState)).scalars():
        site = entry(state.name)
        if state.cooldown_until is not None and state.cooldown_until > now:
            site["cooldown_until"] = state.cooldown_until.isoformat()
            site["cooldown_seconds"] = int((state.cooldown_until - now).total_seconds())
            site["cooldown_reason"] = state.cooldown_reason
        site["paused"] = state.paused_at is not None
    result = []
    for name in sorted(per_site):
        site = per_site[name]
        configured = sites.get(name)
        site["in_flight"] = site["download"].get(TaskState.LEASED, 0)
        site["max_in_flight"] = configured.max_in_flight if configured else None
        site["configured"] = configured is not None
        result.append(site)
    return result


def _nodes(session: Session, now: datetime) -> list[dict[str, Any]]:
    done: dict[int, int] = {}
    size: dict[int, int] = {}
    for _minute, _kind, client, count, recorded in minutes_since(session, now - RECENT):
        done[client] = done.get(client, 0) + count
        size[client] = size.get(client, 0) + recorded
    live = (Lease.state == LeaseState.ACTIVE) & (Lease.expires_at > now)
    leases = dict(session.execute(select(Lease.client_id, func.count()).where(live).group_by(Lease.client_id)).all())
    nodes = []
    for key in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.name)):
        silent = None
        if key.last_seen_at is not None and now - key.last_seen_at > SILENT_AFTER:
            silent = int((now - key.last_seen_at).total_seconds() // 60)
        nodes.append(
            {
                "name": key.name,
                "role": key.role,
                "version": key.client_version,
                "last_seen": key.last_seen_at.isoformat() if key.last_seen_at else None,
                "silent_minutes": silent,
                "done_last_hour": done.get(key.id, 0),
                "bytes_last_hour": int(size.get(key.id) or 0),
                "active_leases": leases.get(key.id, 0),
            }
        )
    return nodes


def _errors(session: Session, now: datetime) -> list[dict[str, Any]]:
    return [error | {"last_seen": error["last_seen"].isoformat()} for error in recent_errors(session, now)]


def _dead(session: Session) -> list[dict[str, Any]]:
    """The newest dead tasks (through the index on ``last_error_at``)."""
    rows = session.execute(
        select(
            Task.id, Task.kind, Task.site, Task.remote_id, Task.url, Task.attempts, Task.last_error, Task.last_error_at
        )
        .where(Task.state == TaskState.DEAD, Task.last_error_at.is_not(None))
        .order_by(Task.last_error_at.desc())
        .limit(DEAD_LISTED)
    )
    return [
        row._asdict() | {"last_error_at": row.last_error_at.isoformat() if row.last_error_at else None} for row in rows
    ]
