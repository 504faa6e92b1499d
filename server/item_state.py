"""An inventory item's state is derived from its metadata tasks, never set by hand:
found when any site found something (a subscription: at its last check), pending while
any still waits, failed when one failed for good, else not found."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, case, exists, update
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState

from .models import Item, Task


def refresh_item_states(session: Session, item_ids: Iterable[int]) -> None:
    """Derive each item's state from its metadata tasks, in one statement."""
    item_ids = sorted({item_id for item_id in item_ids if item_id is not None})
    if not item_ids:
        return

    def any_task(*states: str, found: bool = False):
        condition = and_(Task.item_id == Item.id, Task.kind == TaskKind.METADATA, Task.state.in_(states))
        return exists().where(condition, Task.found_count > 0) if found else exists().where(condition)

    session.execute(
        update(Item)
        .where(Item.id.in_(item_ids))
        .values(
            state=case(
                # a subscription waiting for its next check (or paused) found what its last check found
                (any_task(TaskState.DONE, TaskState.SCHEDULED, TaskState.PAUSED, found=True), ItemState.FOUND),
                (any_task(TaskState.QUEUED, TaskState.LEASED, TaskState.PAUSED), ItemState.PENDING),
                (any_task(TaskState.DEAD), ItemState.FAILED),
                else_=ItemState.NOT_FOUND,
            )
        )
        .execution_options(synchronize_session=False)
    )
