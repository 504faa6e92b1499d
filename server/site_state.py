"""What the coordinator knows of each site right now: cooling down after a 429 (for every
node), how many of its downloads are in flight (``max_in_flight``), its last health test."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.states import TaskKind, TaskState

from .database import dialect_insert, is_postgresql, sql_literal, utcnow
from .errors import NotFound
from .models import SiteState, Task
from .sites import SiteRegistry

LEASED = sql_literal(TaskState.LEASED)


def set_cooldown(session: Session, site: str, until: datetime, reason: str, now: datetime | None = None) -> bool:
    """Cool ``site`` down for everyone until ``until`` (an earlier end never shortens it).
    True when this starts a cooldown (the site was not cooling down at ``now``)."""
    now = now or utcnow()
    session.execute(dialect_insert(session, SiteState).values(name=site, updated_at=now).on_conflict_do_nothing())
    before = session.scalar(select(SiteState.cooldown_until).where(SiteState.name == site))
    session.execute(
        update(SiteState)
        .where(
            SiteState.name == site,
            (SiteState.cooldown_until.is_(None)) | (SiteState.cooldown_until < until),
        )
        .values(cooldown_until=until, cooldown_reason=reason[:500], updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return (before is None or before <= now) and until > now


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


def record_test(
    session: Session,
    site: str,
    *,
    client_id: int,
    passed: bool,
    checks: list[dict],
    sites: SiteRegistry,
    now: datetime | None = None,
) -> datetime:
    """A node's health test of ``site``: the last one is kept (and shown in /stats and the report)."""
    now = now or utcnow()
    if site not in sites:
        raise NotFound(f"no site {site[:100]!r}; known: {', '.join(sites.names()) or 'none'}")
    session.execute(dialect_insert(session, SiteState).values(name=site, updated_at=now).on_conflict_do_nothing())
    session.execute(
        update(SiteState)
        .where(SiteState.name == site)
        .values(test_at=now, test_client_id=client_id, test_passed=passed, test_checks=checks, updated_at=now)
    )
    session.commit()
    return now


def last_tests(session: Session) -> dict[str, dict]:
    """Each tested site's last test: when, by which node, passed, and the checks that failed."""
    from .models import ApiKey

    rows = session.execute(
        select(SiteState.name, SiteState.test_at, SiteState.test_passed, SiteState.test_checks, ApiKey.name)
        .outerjoin(ApiKey, ApiKey.id == SiteState.test_client_id)
        .where(SiteState.test_at.is_not(None))
    ).all()
    return {
        name: {
            "at": at.isoformat(),
            "node": node,
            "passed": bool(passed),
            "failed": [check for check in checks or [] if not check.get("passed")],
        }
        for name, at, passed, checks, node in rows
    }
