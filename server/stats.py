"""``/stats``: what the fleet is doing, from aggregate queries only (never a table load)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState

from .catalogue import archive_totals
from .database import read_only, utcnow
from .known import known_counts
from .models import ApiKey, File, Item, Lease, LeaseState, SiteState, Task
from .site_state import last_tests
from .sites import SiteRegistry

RECENT_ERRORS_WINDOW = timedelta(hours=24)
THROUGHPUT_WINDOW = timedelta(hours=1)


def collect_stats(session: Session, *, sites: SiteRegistry, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    read_only(session)

    items = {state.value: 0 for state in ItemState}
    for state, count in session.execute(select(Item.state, func.count()).group_by(Item.state)):
        items[state] = count
    items["total"] = sum(items.values())

    tasks = {kind.value: {state.value: 0 for state in TaskState} for kind in TaskKind}
    per_site: dict[str, dict[str, Any]] = {
        name: {"tasks": {kind.value: {} for kind in TaskKind}} for name in sites.names()
    }
    counts = session.execute(
        select(Task.kind, Task.site, Task.state, func.count()).group_by(Task.kind, Task.site, Task.state)
    )
    for kind, site, state, count in counts:
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

    live = (Lease.state == LeaseState.ACTIVE) & (Lease.expires_at > now)
    active_leases, leased_tasks = session.execute(
        select(func.count(), func.coalesce(func.sum(Lease.task_count), 0)).where(live)
    ).one()
    overdue = session.scalar(select(func.count()).where((Lease.state == LeaseState.ACTIVE) & (Lease.expires_at <= now)))

    done_by = dict(
        session.execute(
            select(Task.done_by, func.count())
            .where(Task.state == TaskState.DONE, Task.done_by.is_not(None))
            .group_by(Task.done_by)
        ).all()
    )
    # Bytes live in the file records: what each node keeps, and what arrived lately.
    bytes_by = dict(session.execute(select(File.client_id, func.sum(File.size)).group_by(File.client_id)).all())
    recent = now - THROUGHPUT_WINDOW
    recent_bytes = session.scalar(
        select(func.coalesce(func.sum(File.size), 0)).join(Task, Task.id == File.task_id).where(Task.done_at > recent)
    )
    recent_rows = session.execute(
        select(Task.done_by, Task.kind, func.count()).where(Task.done_at > recent).group_by(Task.done_by, Task.kind)
    )
    throughput = {kind.value: 0 for kind in TaskKind}
    recent_by_client: dict[int, int] = {}
    for key_id, kind, count in recent_rows:
        throughput[kind] = throughput.get(kind, 0) + count
        recent_by_client[key_id] = recent_by_client.get(key_id, 0) + count

    leases_by_client = dict(
        session.execute(select(Lease.client_id, func.count()).where(live).group_by(Lease.client_id)).all()
    )
    clients = []
    for key in session.scalars(select(ApiKey).order_by(ApiKey.name)):
        count, size = done_by.get(key.id, 0), bytes_by.get(key.id, 0)
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
    archive = archive_totals(session)
    known = known_counts(session)
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


def recent_errors(session: Session, now: datetime) -> list[dict[str, Any]]:
    """The ten most frequent (class, message) pairs of the errors of the last day (through
    the index on ``last_error_at``)."""
    rows = session.execute(
        select(Task.error_class, Task.last_error, func.count(), func.max(Task.last_error_at))
        .where(Task.last_error_at > now - RECENT_ERRORS_WINDOW, Task.error_class.is_not(None))
        .group_by(Task.error_class, Task.last_error)
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
