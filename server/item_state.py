"""An inventory item's state is derived from its metadata tasks, never set by hand:
found when any site found something (a subscription: at its last check), pending while
any still waits, failed when one failed for good, else not found. A found item is
synchronized while every post it found is settled (kept with events on: the moment it
became so is an ``item.synchronized`` event)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, case, exists, select, update
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState

from .counts import update_counted
from .database import is_postgresql
from .models import Item, ItemPost, Task


def refresh_item_states(session: Session, item_ids: Iterable[int]) -> None:
    """Derive each item's state from its metadata tasks, in one statement."""
    item_ids = sorted({item_id for item_id in item_ids if item_id is not None})
    if not item_ids:
        return

    def any_task(*states: str, found: bool = False):
        condition = and_(Task.item_id == Item.id, Task.kind == TaskKind.METADATA, Task.state.in_(states))
        return exists().where(condition, Task.found_count > 0) if found else exists().where(condition)

    state = case(
        # a subscription waiting for its next check (or paused) found what its last check found
        (any_task(TaskState.DONE, TaskState.SCHEDULED, TaskState.PAUSED, found=True), ItemState.FOUND),
        (any_task(TaskState.QUEUED, TaskState.LEASED, TaskState.PAUSED), ItemState.PENDING),
        (any_task(TaskState.DEAD), ItemState.FAILED),
        else_=ItemState.NOT_FOUND,
    )
    update_counted(session, Item.__table__, Item.id.in_(item_ids), {"state": state})


#: A found post is settled once its download is done, dead, or a duplicate of a held file.
SETTLED = (TaskState.DONE, TaskState.DEAD, TaskState.DUPLICATE)


def items_of_posts(session: Session, task_ids: Iterable[int]) -> set[int]:
    """Every item that found one of these download tasks."""
    ids = sorted(set(task_ids))
    if not ids:
        return set()
    return set(session.scalars(select(ItemPost.item_id).where(ItemPost.task_id.in_(ids))))


def synchronize(session: Session, item_ids: Iterable[int | None], now: datetime) -> list[tuple[int, str]]:
    """Mark the found items whose every post is now settled as synchronized (returned, as
    (id, key): the caller's ``item.synchronized`` events); unmark those that found more.

    On PostgreSQL the items are locked first, in id order: of two transactions settling an
    item's last two posts, the second one reads after the first commits and sees both."""
    ids = sorted({item_id for item_id in item_ids if item_id is not None})
    if not ids:
        return []
    if is_postgresql(session):
        session.execute(select(Item.id).where(Item.id.in_(ids)).order_by(Item.id).with_for_update())
    unsettled = exists().where(ItemPost.item_id == Item.id, Task.id == ItemPost.task_id, Task.state.not_in(SETTLED))
    session.execute(
        update(Item)
        .where(Item.id.in_(ids), Item.synchronized_at.is_not(None), unsettled)
        .values(synchronized_at=None)
        .execution_options(synchronize_session=False)
    )
    newly = session.execute(
        update(Item)
        .where(Item.id.in_(ids), Item.synchronized_at.is_(None), Item.state == ItemState.FOUND, ~unsettled)
        .values(synchronized_at=now)
        .returning(Item.id, Item.key)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((row.id, row.key) for row in newly)
