"""``/stats``: what the fleet is doing, from the kept counts (``server.counts``): it never
counts the tasks, items or files tables, so it costs the same at any size of the archive
(only its recent errors read tasks: the last day's failures, through their index)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.states import TaskKind, TaskState

from .counts import (
    GONE_UPSTREAM,
    KNOWN_SKIPPED,
    UNIQUE_BYTES,
    UNIQUE_FILES,
    counter_values,
    item_counts,
    minutes_since,
    node_totals,
    task_counts,
    video_counter,
)
from .database import read_only, utcnow
from .known import known_counts
from .models import ApiKey, Lease, LeaseState, SiteState, Task
from .site_state import last_tests
from .sites import SiteRegistry

RECENT_ERRORS_WINDOW = timedelta(hours=24)
#: The newest errors of the window that ``recent_errors`` groups.
RECENT_ERRORS_READ = 10_000
THROUGHPUT_WINDOW = timedelta(hours=1)


def collect_stats(session: Session, *, sites: SiteRegistry, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    read_only(session)

    counters = counter_values(session)
    items = item_counts(session, counters)
    items["total"] = sum(items.values())

    tasks = {kind.value: {state.value: 0 for state in TaskState} for kind in TaskKind}
    per_site: dict[str, dict[str, Any]] = {
        name: {"tasks": {kind.value: {} for kind in TaskKind}} for name in sites.names()
    }
    for kind, site, state, count in task_counts(session):
        tasks.setdefault(kind, {})[state] = tasks.get(kind, {}).get(state, 0) + count
        site_tasks = per_site.setdefault(site, {"tasks": {k.value: {} for k in TaskKind}})["tasks"]
        site_tasks.setdefault(kind, {})[state] = count
    for kind_counts in tasks.values():
        kind_counts["total"] = sum(kind_counts.values())

    held_back = session.execute(
        select(SiteState.name, SiteState.cooldown_until, SiteState.cooldown_reason, SiteState.paused_at).where(
            (SiteState.cooldown_until > now) | SiteState.paused_at.is_not(None)
        )
    ).all()
    for name, until, reason, paused_at in held_back:
        site_entry = per_site.setdefault(name, {"tasks": {k.value: {} for k in TaskKind}})
        if until is not None and until > now:
            site_entry["cooldown_until"] = until
            site_entry["cooldown_reason"] = reason
        site_entry["paused_at"] = paused_at
    tests = last_tests(session)
    for name, entry in per_site.items():
        entry.setdefault("cooldown_until", None)
        entry.setdefault("paused_at", None)
        entry["last_test"] = tests.get(name)
        entry["in_flight"] = entry["tasks"].get(TaskKind.DOWNLOAD, {}).get(TaskState.LEASED, 0)
        configured = sites.get(name)
        entry["configured"] = configured is not None
        entry["max_in_flight"] = configured.max_in_flight if configured else None
        entry["video_hours"] = round(counters.get(video_counter(name), 0) / 3_600_000, 3)

    live = (Lease.state == LeaseState.ACTIVE) & (Lease.expires_at > now)
    active_leases, leased_tasks = session.execute(
        select(func.count(), func.coalesce(func.sum(Lease.task_count), 0)).where(live)
    ).one()
    overdue = session.scalar(select(func.count()).where((Lease.state == LeaseState.ACTIVE) & (Lease.expires_at <= now)))

    nodes = node_totals(session)
    throughput = {kind.value: 0 for kind in TaskKind}
    recent_by_client: dict[int, int] = {}
    recent_bytes = 0
    for _minute, kind, client, done, size in minutes_since(session, now - THROUGHPUT_WINDOW):
        throughput[kind] = throughput.get(kind, 0) + done
        recent_by_client[client] = recent_by_client.get(client, 0) + done
        recent_bytes += size

    leases_by_client = dict(
        session.execute(select(Lease.client_id, func.count()).where(live).group_by(Lease.client_id)).all()
    )
    clients = []
    for key in session.scalars(select(ApiKey).order_by(ApiKey.name)):
        kept = nodes.get(key.id, {})
        count, size = kept.get("tasks_done", 0), kept.get("bytes", 0)
        clients.append(
            {
                "name": key.name,
                "role": key.role,
                "version": key.client_version,
                "last_seen": key.last_seen_at,
                "revoked": key.revoked_at is not None,
                "tasks_done": count,
                "bytes": size,
                "done_last_hour": recent_by_client.get(key.id, 0),
                "active_leases": leases_by_client.get(key.id, 0),
            }
        )

    errors = recent_errors(session, now)
    archive = archive_totals(nodes, counters)
    known = known_counts(counters)
    session.commit()
    return {
        "generated_at": now,
        "archive": archive,
        "known": known,
        "detail": "full",
        "items": items,
        "tasks": tasks,
        "sites": per_site,
        "leases": {"active": active_leases, "tasks_leased": int(leased_tasks), "expired_unreclaimed": overdue},
        "clients": clients,
        "throughput": {
            "window_seconds": int(THROUGHPUT_WINDOW.total_seconds()),
            "done": throughput,
            "bytes": int(recent_bytes),
        },
        "recent_errors": errors,
    }


def archive_totals(nodes: dict[int, dict[str, int]], counters: dict[str, int]) -> dict[str, int]:
    """Files and bytes recorded, and how much of it is distinct content (by sha256)."""
    return {
        "files": sum(node["files"] for node in nodes.values()),
        "bytes": sum(node["bytes"] for node in nodes.values()),
        "unique_files": counters.get(UNIQUE_FILES, 0),
        "unique_bytes": counters.get(UNIQUE_BYTES, 0),
        "known_skipped": counters.get(KNOWN_SKIPPED, 0),
        "gone_upstream": counters.get(GONE_UPSTREAM, 0),
    }


def recent_errors(session: Session, now: datetime) -> list[dict[str, Any]]:
    """The ten most frequent (class, message) pairs among the newest errors of the last day:
    at most ``RECENT_ERRORS_READ`` of them, read newest first through the index on
    ``last_error_at``, so a day of a million failures costs a look what a quiet one does."""
    newest = (
        select(Task.error_class, Task.last_error, Task.last_error_at)
        .where(Task.last_error_at > now - RECENT_ERRORS_WINDOW, Task.error_class.is_not(None))
        .order_by(Task.last_error_at.desc())
        .limit(RECENT_ERRORS_READ)
        .subquery()
    )
    rows = session.execute(
        select(newest.c.error_class, newest.c.last_error, func.count(), func.max(newest.c.last_error_at))
        .group_by(newest.c.error_class, newest.c.last_error)
        .order_by(func.count().desc())
        .limit(10)
    )
    return [
        {"error_class": error_class, "error": message, "count": count, "last_seen": last}
        for error_class, message, count, last in rows
    ]


def public_part(stats: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see: counts. Not who the nodes are, their versions, or error texts."""
    public = {key: value for key, value in stats.items() if key not in ("clients", "recent_errors")}
    public["sites"] = {
        name: {key: value for key, value in site.items() if key not in ("cooldown_reason", "last_test")}
        | {"last_test": _outcome_only(site.get("last_test"))}
        for name, site in stats["sites"].items()
    }
    public["detail"] = "counts"
    return public


def _outcome_only(test: dict[str, Any] | None) -> dict[str, Any] | None:
    """A site test without who ran it or why it failed (the reasons name URLs)."""
    return None if test is None else {"at": test["at"], "passed": test["passed"]}
