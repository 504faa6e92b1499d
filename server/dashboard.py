"""What ``/dashboard`` shows, as one JSON snapshot: per site its tasks by state, in-flight
against its limit, cooldown and pause; per node what it did in the last hour and whether
it went silent; the last 24 hours minute by minute; recent errors; the newest dead tasks.

A snapshot is reused for ``DASHBOARD_REFRESH_SECONDS`` by every dashboard a process
serves, so open dashboards cost one set of queries per process per refresh, not one per
viewer. The 24-hour series is kept per process: a minute that is over is counted once,
and each refresh reads only the minutes since (an index range on ``done_at`` and on the
files' ``created_at``).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from common.states import LeaseState, TaskKind, TaskState

from .database import is_postgresql, read_only, utcnow
from .models import ApiKey, File, Lease, SiteState, Task
from .sites import SiteRegistry
from .stats import recent_errors

SERIES_MINUTES = 24 * 60
#: A minute is final this long after it ends (a submit's clock is read before it commits).
MINUTE_GRACE = timedelta(minutes=2)
RECENT = timedelta(hours=1)
#: A node not seen for this long is flagged silent.
SILENT_AFTER = timedelta(minutes=10)
DEAD_LISTED = 50


def _minute(column, session: Session):
    """A timestamp column truncated to its UTC minute, as 'YYYY-MM-DDTHH:MM' on both databases."""
    if is_postgresql(session):
        return func.to_char(func.timezone("UTC", column), literal_column("'YYYY-MM-DD\"T\"HH24:MI'"))
    return func.strftime("%Y-%m-%dT%H:%M", column)


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class ThroughputSeries:
    """Done tasks and downloaded bytes per minute over the last 24 hours, kept per process."""

    def __init__(self) -> None:
        self._final: dict[str, list[int]] = {}  # minute -> [downloads, metadata, bytes], minutes that are over
        self._final_until: datetime | None = None
        self._lock = threading.Lock()

    def read(self, session: Session, now: datetime) -> dict[str, Any]:
        end = _floor_minute(now)
        start = end - timedelta(minutes=SERIES_MINUTES - 1)
        with self._lock:
            since = max(start, self._final_until) if self._final_until else start
            fresh = self._count(session, since)
            final_before = _floor_minute(now - MINUTE_GRACE)
            for minute, counts in fresh.items():
                if datetime.fromisoformat(minute + ":00+00:00") < final_before:
                    self._final[minute] = counts
            self._final_until = max(since, final_before)
            oldest = start.strftime("%Y-%m-%dT%H:%M")
            for minute in [m for m in self._final if m < oldest]:
                del self._final[minute]
            merged = {**self._final, **fresh}
        labels = [(start + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M") for n in range(SERIES_MINUTES)]
        rows = [merged.get(label, [0, 0, 0]) for label in labels]
        return {
            "start": start.isoformat(),
            "step_seconds": 60,
            "downloads": [row[0] for row in rows],
            "metadata": [row[1] for row in rows],
            "bytes": [row[2] for row in rows],
        }

    def _count(self, session: Session, since: datetime) -> dict[str, list[int]]:
        counts: dict[str, list[int]] = {}
        minute = _minute(Task.done_at, session)
        done = session.execute(
            select(minute, Task.kind, func.count())
            .where(Task.done_at >= since, Task.state == TaskState.DONE)
            .group_by(minute, Task.kind)
        )
        for label, kind, count in done:
            counts.setdefault(label, [0, 0, 0])[0 if kind == TaskKind.DOWNLOAD else 1] += count
        minute = _minute(File.created_at, session)
        for label, size in session.execute(
            select(minute, func.sum(File.size)).where(File.created_at >= since).group_by(minute)
        ):
            counts.setdefault(label, [0, 0, 0])[2] += int(size or 0)
        return counts


class Dashboard:
    """Snapshots for ``/dashboard/data``, reused for ``refresh_seconds``."""

    def __init__(self, refresh_seconds: float):
        self.refresh_seconds = refresh_seconds
        self.series = ThroughputSeries()
        self._snapshots: dict[bool, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def snapshot(self, session: Session, sites: SiteRegistry, *, full: bool) -> dict[str, Any]:
        """``full``: also the nodes, error texts and dead tasks (which name URLs): for key holders."""
        with self._lock:
            taken = self._snapshots.get(full)
            if taken is not None and time.monotonic() - taken[0] < self.refresh_seconds:
                return taken[1]
        data = collect(session, sites, self.series, full=full)
        with self._lock:
            self._snapshots[full] = (time.monotonic(), data)
        return data

    def forget(self) -> None:
        """After an action: the next refresh shows its effect."""
        with self._lock:
            self._snapshots.clear()


def collect(
    session: Session, sites: SiteRegistry, series: ThroughputSeries, *, full: bool, now: datetime | None = None
) -> dict[str, Any]:
    now = now or utcnow()
    read_only(session)
    data: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "sites": _sites(session, sites, now),
        "throughput": series.read(session, now),
        "full": full,
    }
    if full:
        data["nodes"] = _nodes(session, now)
        data["errors"] = _errors(session, now)
        data["dead"] = _dead(session)
    session.commit()
    return data


def _sites(session: Session, sites: SiteRegistry, now: datetime) -> list[dict[str, Any]]:
    """Tasks by kind and state per site; a queued task that failed before counts as retrying."""
    per_site: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return per_site.setdefault(
            name, {"name": name, "download": {}, "metadata": {}, "cooldown_until": None, "paused": False}
        )

    retried = (Task.attempts > 0).label("retried")
    rows = session.execute(
        select(Task.site, Task.kind, Task.state, retried, func.count()).group_by(
            Task.site, Task.kind, Task.state, retried
        )
    )
    for site, kind, state, was_retried, count in rows:
        bucket = "retrying" if state == TaskState.QUEUED and was_retried else state
        counts = entry(site)[kind]
        counts[bucket] = counts.get(bucket, 0) + count
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
    recent = now - RECENT
    done = dict(
        session.execute(
            select(Task.done_by, func.count())
            .where(Task.done_at > recent, Task.state == TaskState.DONE)
            .group_by(Task.done_by)
        ).all()
    )
    size = dict(
        session.execute(
            select(File.client_id, func.sum(File.size)).where(File.created_at > recent).group_by(File.client_id)
        ).all()
    )
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
