"""Operator actions on the queue: list tasks (e.g. the dead-task report) and requeue them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from common.states import TaskKind, TaskState

from .counts import update_counted
from .database import read_only, utcnow
from .errors import InvalidInput
from .events import NO_EVENTS, Outbox
from .item_state import items_of_posts, refresh_item_states, synchronize
from .leasing import reclaim_expired
from .models import Lease, LeaseState, Task
from .policy import LeasePolicy
from .transitions import fresh_start

REQUEUEABLE = (TaskState.DEAD, TaskState.NOT_FOUND, TaskState.DONE, TaskState.QUEUED, TaskState.DUPLICATE)


def list_tasks(
    session: Session,
    *,
    state: str | None = None,
    kind: str | None = None,
    site: str | None = None,
    limit: int = 100,
    after_id: int = 0,
) -> list[dict[str, Any]]:
    """Tasks in id order, filtered; ``after_id`` pages through long reports."""
    read_only(session)
    statement = (
        select(
            Task.id,
            Task.kind,
            Task.site,
            Task.state,
            Task.url,
            Task.remote_id,
            Task.item_id,
            Task.attempts,
            Task.error_class,
            Task.last_error,
            Task.last_error_at,
            Task.available_at,
            Task.lease_id,
            Task.updated_at,
        )
        .where(Task.id > after_id)
        .order_by(Task.id)
        .limit(limit)
    )
    if state is not None:
        statement = statement.where(Task.state == _check(TaskState, state, "state"))
    if kind is not None:
        statement = statement.where(Task.kind == _check(TaskKind, kind, "kind"))
    if site is not None:
        statement = statement.where(Task.site == site)
    rows = [row._asdict() for row in session.execute(statement)]
    session.commit()
    return rows


def requeue_tasks(
    session: Session,
    *,
    task_ids: Sequence[int] | None = None,
    state: str | None = None,
    kind: str | None = None,
    site: str | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Give tasks a fresh start (attempts 0, available now); returns how many of each kind.
    Without ``kind``, both kinds match (``site`` alone also requeues its metadata tasks).
    Leased tasks are never touched: ``reclaim_stuck`` puts back those of expired leases."""
    now = now or utcnow()
    if task_ids is None and state is None:
        raise InvalidInput.at(["state"], "name the tasks: by ids, or by state (dead, not_found, done, queued)")
    where = Task.state.in_(REQUEUEABLE)
    if task_ids is not None:
        where &= Task.id.in_(list(task_ids))
    if state is not None:
        if _check(TaskState, state, "state") not in REQUEUEABLE:
            raise InvalidInput.at(["state"], f"only {', '.join(REQUEUEABLE)} tasks can be requeued")
        where &= Task.state == state
    if kind is not None:
        where &= Task.kind == _check(TaskKind, kind, "kind")
    if site is not None:
        where &= Task.site == site
    changed = update_counted(
        session, Task.__table__, where, fresh_start(now), returning=(Task.id, Task.kind, Task.item_id)
    )
    refresh_item_states(session, {row.item_id for row in changed if row.kind == TaskKind.METADATA})
    # A requeued post unsettles its items: done again, they are synchronized again.
    synchronize(session, items_of_posts(session, [row.id for row in changed if row.kind == TaskKind.DOWNLOAD]), now)
    session.commit()
    by_kind = {kind.value: 0 for kind in TaskKind}
    for row in changed:
        by_kind[row.kind] += 1
    return by_kind


def reclaim_stuck(
    session: Session, *, policy: LeasePolicy, now: datetime | None = None, events: Outbox = NO_EVENTS
) -> int:
    """Reclaim every expired lease now instead of waiting for the next lease request."""
    now = now or utcnow()
    total = 0
    while True:
        total += reclaim_expired(session, policy=policy, now=now, events=events)
        session.commit()
        overdue = exists().where(Lease.state == LeaseState.ACTIVE, Lease.expires_at <= now)
        if not session.scalar(select(overdue)):
            return total


def _check(enum, value: str, name: str):
    try:
        return enum(value)
    except ValueError:
        raise InvalidInput.at([name], f"must be one of {', '.join(enum)}") from None
