"""Every SQL statement of the hot path, named and built once (procrastinate keeps its
queries in one place the same way): leasing, reclaiming, recording results, completing
a lease. ``server.leasing`` runs them; ``bench/ceiling_app.py`` is measured against
what they do (its "every statement" variant writes the same rows by hand).

Core on the tables, no ORM identity map or unit of work per task; fixed vocabulary
(states, kinds) is written into the SQL text, so PostgreSQL's generic plans still match
the partial indexes.
"""

from __future__ import annotations

import functools

from sqlalchemy import bindparam, exists, func, insert, or_, select, tuple_, update

from common.states import LeaseState, TaskKind, TaskState

from .database import in_list, sql_literal
from .models import Check, Lease, SiteState, Task
from .policy import PROMOTE_BATCH, RECLAIM_BATCH

QUEUED, LEASED = sql_literal(TaskState.QUEUED), sql_literal(TaskState.LEASED)

TASKS = Task.__table__
LEASES = Lease.__table__
SITE_STATES = SiteState.__table__
CHECKS = Check.__table__
LEASED_COLUMNS = (
    TASKS.c.id,
    TASKS.c.kind,
    TASKS.c.site,
    TASKS.c.url,
    TASKS.c.remote_id,
    TASKS.c.payload,
    TASKS.c.priority,
    TASKS.c.attempts,
    TASKS.c.item_id,
)
#: A metadata lease also says how many checks each task has had (subscriptions).
METADATA_COLUMNS = (TASKS.c.check_count, TASKS.c.check_every)


def _held_back():
    """A site none of whose tasks goes out now: cooling down after a 429, or paused."""
    return or_(SITE_STATES.c.cooldown_until > bindparam("now"), SITE_STATES.c.paused_at.is_not(None))


@functools.cache
def lease_statement(kind: str, per_site: bool):
    """The lease statement for one shape of request, built once (it runs on every lease).

    Tasks of a site cooling down (a 429) are left out in the same statement.

    Candidates are picked in a materialized CTE: as ``IN (subquery)`` PostgreSQL may re-run
    the subquery per row, and with SKIP LOCKED + LIMIT each run skips rows this very
    statement already updated, so more than ``n`` tasks would be leased.
    """
    candidates = (
        select(TASKS.c.id)
        .where(TASKS.c.state == QUEUED, TASKS.c.kind == sql_literal(kind), TASKS.c.available_at <= bindparam("now"))
        .order_by(TASKS.c.priority.desc(), TASKS.c.id)
        .limit(bindparam("n"))
        .with_for_update(skip_locked=True)
    )
    if per_site:
        cooling = exists().where(SITE_STATES.c.name == bindparam("only_site"), _held_back())
        candidates = candidates.where(TASKS.c.site == bindparam("only_site"), ~cooling)
    else:
        cooling = exists().where(SITE_STATES.c.name == TASKS.c.site, _held_back())
        candidates = candidates.where(~cooling)
    picked = candidates.cte("picked").prefix_with("MATERIALIZED")
    return (
        update(TASKS)
        .where(TASKS.c.id == picked.c.id, TASKS.c.state == QUEUED)
        .values(
            state=TaskState.LEASED,
            lease_id=bindparam("new_lease_id"),
            leased_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .returning(*LEASED_COLUMNS, *(METADATA_COLUMNS if kind == TaskKind.METADATA else ()))
    )


#: Subscriptions whose next check is due, and resumed tasks whose backoff has ended, join
#: the queue: run before every lease, through their own partial index (a bounded batch).
PROMOTE_DUE = (
    update(TASKS)
    .where(
        TASKS.c.id.in_(
            select(TASKS.c.id)
            .where(TASKS.c.state == sql_literal(TaskState.SCHEDULED), TASKS.c.available_at <= bindparam("now"))
            .order_by(TASKS.c.available_at)
            .limit(PROMOTE_BATCH)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        ),
        TASKS.c.state == sql_literal(TaskState.SCHEDULED),
    )
    .values(state=TaskState.QUEUED, updated_at=bindparam("now"))
    .returning(TASKS.c.kind, TASKS.c.site, TASKS.c.attempts)
)


INSERT_LEASE = insert(LEASES)


#: Runs on every lease request, so it is built once, and as Core (no ORM per call).
EXPIRED_LEASES = (
    select(LEASES.c.id, LEASES.c.client_id)
    .where(LEASES.c.state == sql_literal(LeaseState.ACTIVE), LEASES.c.expires_at <= bindparam("now"))
    .order_by(LEASES.c.id)
    .limit(RECLAIM_BATCH)
    .with_for_update(skip_locked=True)
)


HELD_COLUMNS = (
    TASKS.c.id,
    TASKS.c.kind,
    TASKS.c.site,
    TASKS.c.remote_id,
    TASKS.c.state,
    TASKS.c.lease_id,
    TASKS.c.result_lease_id,
    TASKS.c.attempts,
    TASKS.c.item_id,
    TASKS.c.priority,
    TASKS.c.error_class,
    TASKS.c.last_error,
    TASKS.c.last_error_at,
    TASKS.c.check_every,
    TASKS.c.check_count,
    TASKS.c.known_count,
)
CHANGED_COLUMNS = (
    "state",
    "attempts",
    "available_at",
    "lease_id",
    "result_lease_id",
    "error_class",
    "last_error",
    "last_error_at",
    "found_count",
    "known_count",
    "check_count",
    "done_by",
    "done_at",
    "updated_at",
)
#: One statement for every per-task outcome of a batch, sent as one executemany.
CHANGE_TASK = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in CHANGED_COLUMNS})
)


#: The newest remote ids each subscription's last done check saw: where its next check stops.
LAST_HEADS = select(CHECKS.c.task_id, CHECKS.c.head).where(
    CHECKS.c.id.in_(
        select(func.max(CHECKS.c.id))
        .where(CHECKS.c.task_id.in_(bindparam("task_ids", expanding=True)), CHECKS.c.outcome == "done")
        .group_by(CHECKS.c.task_id)
    )
)

#: The download tasks of found posts, by (site, remote id): to link them to their items.
DOWNLOAD_IDS = select(TASKS.c.id, TASKS.c.site, TASKS.c.remote_id).where(
    TASKS.c.kind == sql_literal("download"),
    tuple_(TASKS.c.site, TASKS.c.remote_id).in_(bindparam("pairs", expanding=True)),
)


READ_LEASE = select(LEASES.c.id, LEASES.c.client_id, LEASES.c.kind, LEASES.c.site, LEASES.c.state).where(
    LEASES.c.id == bindparam("lease_id")
)


@functools.cache
def held_tasks(postgresql: bool):
    return select(*HELD_COLUMNS).where(in_list(TASKS.c.id, "ids", postgresql)).with_for_update()


@functools.cache
def downloaded(postgresql: bool):
    """Every download of a batch done, in one statement whatever the batch size; only tasks
    the lease still holds change, and RETURNING names them (with what their events say)."""
    return (
        update(TASKS)
        .where(
            in_list(TASKS.c.id, "ids", postgresql), TASKS.c.lease_id == bindparam("by_lease"), TASKS.c.state == LEASED
        )
        .values(
            state=TaskState.DONE,
            lease_id=None,
            result_lease_id=bindparam("by_lease"),
            done_by=bindparam("by_client"),
            done_at=bindparam("now"),
            available_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .returning(TASKS.c.id, TASKS.c.kind, TASKS.c.site, TASKS.c.remote_id, TASKS.c.item_id)
    )


#: The lease is completed when it holds no task any more. Its row is taken with SKIP
#: LOCKED: a reclaim holding it (PostgreSQL) waits on our task rows, so waiting for it
#: here would deadlock; the reclaim marks the lease expired instead, which is as good.
COMPLETE_LEASE = (
    update(LEASES)
    .where(
        LEASES.c.id.in_(
            select(LEASES.c.id)
            .where(LEASES.c.id == bindparam("of_lease"), LEASES.c.state == sql_literal(LeaseState.ACTIVE))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        ),
        ~exists().where(TASKS.c.lease_id == bindparam("of_lease"), TASKS.c.state == LEASED),
    )
    .values(state=LeaseState.COMPLETED, ended_at=bindparam("now"))
)
