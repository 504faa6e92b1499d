"""The report an operator reads from cron mail (hydownloader's report): what needs a look.
Each section is a plain query; ``Report.needs_attention`` is what the exit status says."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState

from .database import read_only, utcnow
from .models import ApiKey, Check, Item, Role, SiteState, Task
from .policy import LeasePolicy
from .site_state import last_tests
from .sites import SiteRegistry
from .transitions import check_interval

#: Rows listed per section (each section also says how many there are in all).
LISTED = 20
SILENT_NODE = timedelta(hours=1)


@dataclass
class Section:
    title: str
    count: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    generated_at: datetime
    sections: dict[str, Section]

    @property
    def needs_attention(self) -> bool:
        return any(section.count for section in self.sections.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 text."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "needs_attention": self.needs_attention,
            "sections": {name: _plain(asdict(section)) for name, section in self.sections.items()},
        }

    def as_text(self) -> str:
        lines = [f"fetchfleet report, {self.generated_at:%Y-%m-%d %H:%M} UTC"]
        if not self.needs_attention:
            return "\n".join([*lines, "all is well"]) + "\n"
        for section in self.sections.values():
            if not section.count:
                continue
            lines += ["", f"{section.title}: {section.count}"]
            for row in section.rows:
                lines.append("  " + "  ".join(f"{value}" for value in row.values() if value is not None))
            if section.count > len(section.rows):
                lines.append(f"  ... and {section.count - len(section.rows)} more")
        return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value.isoformat() if isinstance(value, datetime) else value


def build_report(session: Session, *, sites: SiteRegistry, policy: LeasePolicy, now: datetime | None = None) -> Report:
    now = now or utcnow()
    read_only(session)
    sections = {
        "failing_checks": _failing_checks(session),
        "overdue": _overdue(session, sites, policy, now),
        "found_nothing": _found_nothing(session),
        "failing_downloads": _failing_downloads(session),
        "dead_tasks": _dead_tasks(session),
        "sites_held_back": _sites_held_back(session, now),
        "failing_site_tests": _failing_site_tests(session),
        "silent_nodes": _silent_nodes(session, now),
        "gone_upstream": _gone_upstream(session),
    }
    session.commit()
    return Report(now, sections)


def _failing_checks(session: Session) -> Section:
    """Items whose last check (on some site) failed."""
    last = select(func.max(Check.id)).group_by(Check.task_id).scalar_subquery()
    rows = session.execute(
        select(Item.key, Check.site, Check.checked_at, Check.error)
        .join(Item, Item.id == Check.item_id)
        .where(Check.id.in_(last), Check.outcome == "failed")
        .order_by(Check.checked_at.desc())
    ).all()
    return Section("items whose last check failed", len(rows), [row._asdict() for row in rows[:LISTED]])


def _overdue(session: Session, sites: SiteRegistry, policy: LeasePolicy, now: datetime) -> Section:
    """Subscriptions not checked within twice their interval: due for over one interval."""
    rows = session.execute(
        select(Task.id, Task.kind, Task.site, Task.check_every, Task.available_at, Item.key)
        .join(Item, Item.id == Task.item_id)
        .where(
            Task.kind == TaskKind.METADATA,
            Task.state.in_([TaskState.QUEUED, TaskState.SCHEDULED]),
            Task.check_count > 0,
            Task.available_at < now,
        )
    ).all()
    late = []
    for row in rows:
        interval = check_interval(row, sites, policy)
        if interval is not None and now - row.available_at > timedelta(seconds=interval):
            late.append({"key": row.key, "site": row.site, "due_since": row.available_at})
    late.sort(key=lambda row: row["due_since"])
    return Section("subscriptions overdue (not checked within twice their interval)", len(late), late[:LISTED])


def _found_nothing(session: Session) -> Section:
    count = session.scalar(select(func.count()).where(Item.state == ItemState.NOT_FOUND))
    rows = session.execute(
        select(Item.key, Item.title).where(Item.state == ItemState.NOT_FOUND).order_by(Item.id).limit(LISTED)
    ).all()
    return Section("items that found nothing", count, [row._asdict() for row in rows])


def _failing_downloads(session: Session) -> Section:
    """Items with downloads that died (failed for good)."""
    dead = func.count(Task.id).label("dead")
    rows = session.execute(
        select(Item.key, dead)
        .join(Item, Item.id == Task.item_id)
        .where(Task.kind == TaskKind.DOWNLOAD, Task.state == TaskState.DEAD)
        .group_by(Item.key)
        .order_by(dead.desc(), Item.key)
    ).all()
    return Section(
        "items whose downloads keep failing (dead downloads)", len(rows), [row._asdict() for row in rows[:LISTED]]
    )


def _dead_tasks(session: Session) -> Section:
    count = func.count(Task.id).label("count")
    rows = session.execute(
        select(Task.site, Task.kind, Task.error_class, Task.last_error, count)
        .where(Task.state == TaskState.DEAD)
        .group_by(Task.site, Task.kind, Task.error_class, Task.last_error)
        .order_by(count.desc())
    ).all()
    total = sum(row.count for row in rows)
    return Section("dead tasks, by site and error", total, [row._asdict() for row in rows[:LISTED]])


def _sites_held_back(session: Session, now: datetime) -> Section:
    rows = session.execute(
        select(SiteState.name, SiteState.paused_at, SiteState.cooldown_until, SiteState.cooldown_reason)
        .where((SiteState.paused_at.is_not(None)) | (SiteState.cooldown_until > now))
        .order_by(SiteState.name)
    ).all()
    listed = [
        {
            "site": row.name,
            "paused_since": row.paused_at,
            "cooling_until": row.cooldown_until if row.cooldown_until and row.cooldown_until > now else None,
            "reason": row.cooldown_reason if row.cooldown_until and row.cooldown_until > now else None,
        }
        for row in rows
    ]
    return Section("sites paused or cooling down", len(listed), listed[:LISTED])


def _failing_site_tests(session: Session) -> Section:
    failed = [
        {
            "site": name,
            "at": test["at"],
            "node": test["node"],
            "why": "; ".join(c.get("detail") or c["name"] for c in test["failed"]),
        }
        for name, test in sorted(last_tests(session).items())
        if not test["passed"]
    ]
    return Section("sites whose last health test failed", len(failed), failed[:LISTED])


def _silent_nodes(session: Session, now: datetime) -> Section:
    rows = session.execute(
        select(ApiKey.name, ApiKey.last_seen_at)
        .where(
            ApiKey.role == Role.CLIENT,
            ApiKey.revoked_at.is_(None),
            ApiKey.last_seen_at.is_not(None),
            ApiKey.last_seen_at < now - SILENT_NODE,
        )
        .order_by(ApiKey.last_seen_at)
    ).all()
    return Section("nodes not seen for an hour", len(rows), [row._asdict() for row in rows[:LISTED]])


def _gone_upstream(session: Session) -> Section:
    count = session.scalar(select(func.count()).select_from(Task).where(Task.gone_at.is_not(None)))
    rows = session.execute(
        select(Task.site, Task.remote_id, Task.gone_at, Item.key)
        .outerjoin(Item, Item.id == Task.item_id)
        .where(Task.gone_at.is_not(None))
        .order_by(Task.gone_at.desc())
        .limit(LISTED)
    ).all()
    return Section("posts gone upstream (files kept)", count, [row._asdict() for row in rows])
