"""What the coordinator knows of each site right now: cooling down after a 429 (for every
node), and how many of its downloads are in flight (``max_in_flight``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.states import TaskKind, TaskState

from .database import dialect_insert, is_postgresql, sql_literal, utcnow
from .models import SiteState, Task

LEASED = sql_literal(TaskState.LEASED)


def set_cooldown(session: Session, site: str, until: datetime, reason: str, now: datetime | None = None) -> None:
    """Cool ``site`` down for everyone until ``until`` (an earlier end never shortens it)."""
    now = now or utcnow()
    session.execute(dialect_insert(session, SiteState).values(name=site, updated_at=now).on_conflict_do_nothing())
    session.execute(
        update(SiteState)
        .where(
            SiteState.name == site,
            (SiteState.cooldown_until.is_(None)) | (SiteState.cooldown_until < until),
        )
        .values(cooldown_until=until, cooldown_reason=reason[:500], updated_at=now)
        .execution_options(synchronize_session=False)
    )


def cooling_sites(session: Session, now: datetime) -> dict[str, datetime]:
    rows = session.execute(select(SiteState.name, SiteState.cooldown_until).where(SiteState.cooldown_until > now))
    return dict(rows.all())


def in_flight(session: Session, site: str, now: datetime) -> int:
    """Download tasks of ``site`` leased right now (read through the partial index of leased
    tasks, which only ever holds what clients hold). On PostgreSQL the site row is locked
    first, so two concurrent leases cannot both see room under the limit."""
    if is_postgresql(session):
        session.execute(dialect_insert(session, SiteState).values(name=site, updated_at=now).on_conflict_do_nothing())
        session.execute(select(SiteState.name).where(SiteState.name == site).with_for_update())
    return session.scalar(
        select(func.count())
        .select_from(Task)
        .where(Task.state == LEASED, Task.kind == sql_literal(TaskKind.DOWNLOAD), Task.site == site)
    )
