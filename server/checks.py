"""Checks: every result of a metadata task is one check of its item on that site, kept
for the item's history, the report and the next re-check (which stops at the newest
posts this one saw). A check that went to the end also syncs deletions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.states import ResultStatus, TaskState

from .counts import GONE_UPSTREAM, tally
from .models import ApiKey, Check, ItemPost, Task
from .policy import LeasePolicy
from .transitions import is_full_check

CHECKS = Check.__table__
KEYS = ApiKey.__table__
TASKS = Task.__table__
LINKS = ItemPost.__table__
#: Newest remote ids a check keeps, per multiple of ``stop_after_known``: a few of the
#: newest known posts may have gone upstream by the next check.
HEAD_FACTOR = 2


def record_checks(
    session: Session,
    checked: Sequence[tuple[Any, Mapping[str, Any], Any]],
    created: Mapping[tuple[str, str], int],
    *,
    client_id: int,
    policy: LeasePolicy,
    now: datetime,
) -> list[dict[str, Any]]:
    """One row per (task, result, change) of a metadata submit, in one insert. A new post
    is credited to the first task of the batch that found it. Returns the posts that full
    checks found gone upstream."""
    credited: set[tuple[str, str]] = set()
    rows = []
    for task, result, change in checked:
        done = result["status"] == ResultStatus.DONE
        found = result.get("found") or [] if done else []
        new = 0
        for row in change.new_downloads:
            pair = (row["site"], row["remote_id"])
            if pair in created and pair not in credited:
                credited.add(pair)
                new += 1
        rows.append(
            {
                "task_id": task.id,
                "item_id": task.item_id,
                "site": task.site,
                "client_id": client_id,
                "checked_at": now,
                "outcome": ("done" if found else "not_found") if done else "failed",
                "posts_seen": len(found),
                "new_posts": new,
                "known_posts": change.values.get("known_count") or 0,
                "stopped_at_known": bool(done and result.get("stopped_at_known")),
                "full": is_full_check(task, policy),
                "head": [str(thing["remote_id"]) for thing in found[: HEAD_FACTOR * policy.stop_after_known]] or None,
                "error": None if done else change.values.get("last_error"),
            }
        )
    ids = session.execute(CHECKS.insert().returning(CHECKS.c.id, sort_by_parameter_order=True), rows).scalars().all()
    gone = []
    for (task, result, _change), check_id in zip(checked, ids, strict=True):
        to_the_end = result["status"] == ResultStatus.DONE and not result.get("stopped_at_known")
        if to_the_end and is_full_check(task, policy) and result.get("found") and task.item_id is not None:
            gone += sync_deletions(session, task, result["found"], check_id, now)
    return gone


def sync_deletions(
    session: Session, task: Any, found: Sequence[Mapping[str, Any]], check_id: int, now: datetime
) -> list[dict[str, Any]]:
    """After a check that went to the end: the item's downloaded posts it did not find are
    gone upstream (kept, marked, with the check that noticed); gone ones it found again
    are back. A check that found nothing at all proves nothing (a site's bad day) and
    never gets here. Returns the posts newly gone."""
    seen = {(thing["site"], str(thing["remote_id"])) for thing in found}
    posts = session.execute(
        select(TASKS.c.id, TASKS.c.site, TASKS.c.remote_id, TASKS.c.state, TASKS.c.gone_at)
        .join(LINKS, LINKS.c.task_id == TASKS.c.id)
        .where(LINKS.c.item_id == task.item_id, TASKS.c.site == task.site)
    ).all()
    gone = [p for p in posts if (p.site, p.remote_id) not in seen and p.state == TaskState.DONE and p.gone_at is None]
    back = [p.id for p in posts if (p.site, p.remote_id) in seen and p.gone_at is not None]
    count = tally(session)
    if gone:
        count.counters[GONE_UPSTREAM] += session.execute(
            update(TASKS)
            .where(TASKS.c.id.in_([p.id for p in gone]), TASKS.c.gone_at.is_(None))
            .values(gone_at=now, gone_check_id=check_id, updated_at=now)
        ).rowcount
    if back:
        count.counters[GONE_UPSTREAM] -= session.execute(
            update(TASKS)
            .where(TASKS.c.id.in_(back), TASKS.c.gone_at.is_not(None))
            .values(gone_at=None, gone_check_id=None, updated_at=now)
        ).rowcount
    return [
        {"task_id": p.id, "site": p.site, "remote_id": p.remote_id, "item_id": task.item_id, "check_id": check_id}
        for p in gone
    ]


def recent_checks(session: Session, item_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """An item's last checks, newest first, on every site."""
    rows = session.execute(
        select(
            CHECKS.c.id,
            CHECKS.c.site,
            CHECKS.c.checked_at,
            CHECKS.c.outcome,
            CHECKS.c.posts_seen,
            CHECKS.c.new_posts,
            CHECKS.c.known_posts,
            CHECKS.c.stopped_at_known,
            CHECKS.c.full,
            CHECKS.c.error,
            KEYS.c.name.label("node"),
        )
        .outerjoin(KEYS, KEYS.c.id == CHECKS.c.client_id)
        .where(CHECKS.c.item_id == item_id)
        .order_by(CHECKS.c.id.desc())
        .limit(limit)
    )
    return [row._asdict() for row in rows]


def check_totals(session: Session, item_id: int) -> dict[str, int]:
    checks, new_posts, failed = session.execute(
        select(
            func.count(CHECKS.c.id),
            func.coalesce(func.sum(CHECKS.c.new_posts), 0),
            func.count(CHECKS.c.id).filter(CHECKS.c.outcome == "failed"),
        ).where(CHECKS.c.item_id == item_id)
    ).one()
    return {"checks": int(checks), "new_posts": int(new_posts), "failed": int(failed)}
