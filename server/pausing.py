"""Pause and resume an item or a whole site. Paused work is never leased; tasks already
leased finish normally (and then wait, if their item is paused).

An item pauses by state: its waiting tasks (its metadata tasks, and the download tasks
it found first) become ``paused``, out of every queue index, so a big paused item costs
the lease nothing. A site pauses by a flag the lease statement already reads (beside
its cooldown).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from common.states import TaskState

from .counts import update_counted
from .database import insert_ignore, utcnow
from .errors import NotFound
from .item_state import refresh_item_states
from .models import Item, SiteState, Task
from .sites import SiteRegistry

WAITING = (TaskState.QUEUED, TaskState.SCHEDULED)


def paused_items(session: Session, item_ids: Iterable[int | None]) -> set[int]:
    """Which of these items are paused."""
    ids = sorted({item_id for item_id in item_ids if item_id is not None})
    if not ids:
        return set()
    return set(session.scalars(select(Item.id).where(Item.id.in_(ids), Item.paused_at.is_not(None))))


def _item(session: Session, key: str) -> Item:
    item = session.scalar(select(Item).where(Item.key == key))
    if item is None:
        session.rollback()
        raise NotFound(f"no item {key[:200]!r}")
    return item


def pause_item(session: Session, key: str, now: datetime | None = None) -> int:
    """Pause an item; returns how many of its waiting tasks were paused."""
    now = now or utcnow()
    item = _item(session, key)
    item.paused_at = item.paused_at or now
    where = (Task.item_id == item.id) & Task.state.in_(WAITING)
    paused = len(update_counted(session, Task.__table__, where, {"state": TaskState.PAUSED, "updated_at": now}))
    session.commit()
    return paused


def resume_item(session: Session, key: str, now: datetime | None = None) -> int:
    """Resume an item: its paused tasks wait again (scheduled until their time, if it is
    still ahead); returns how many."""
    now = now or utcnow()
    item = _item(session, key)
    item.paused_at = None
    waiting = case((Task.available_at > now, TaskState.SCHEDULED), else_=TaskState.QUEUED)
    where = (Task.item_id == item.id) & (Task.state == TaskState.PAUSED)
    resumed = len(update_counted(session, Task.__table__, where, {"state": waiting, "updated_at": now}))
    refresh_item_states(session, [item.id])
    session.commit()
    return resumed


def set_site_paused(session: Session, name: str, paused: bool, *, sites: SiteRegistry, now: datetime | None = None):
    """Pause or resume every task of a site (leased ones finish)."""
    now = now or utcnow()
    if name not in sites:
        raise NotFound(f"no site {name[:100]!r}; known: {', '.join(sites.names()) or 'none'}")
    session.execute(insert_ignore(session, SiteState).values(name=name, updated_at=now))
    session.execute(
        update(SiteState).where(SiteState.name == name).values(paused_at=now if paused else None, updated_at=now)
    )
    session.commit()
