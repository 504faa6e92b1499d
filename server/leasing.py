"""Leasing: one mechanism for every task kind.

A lease hands a client up to 100 queued tasks at once, with an unguessable id and an
expiry. Heartbeats extend it; a release hands tasks back; results end it. A lease
that expires is reclaimed the next time anyone asks for work (no cron): its unfinished
tasks go back to the queue, and a late result for a task someone else now holds is
refused (409). Every function is one transaction and takes the clock as ``now``.

Atomicity: on SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (one
writer at a time); on PostgreSQL candidates are picked ``FOR UPDATE SKIP LOCKED``.
Lock order everywhere is lease row, then its task rows, so reclaim and submit cannot
deadlock.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, exists, select, update
from sqlalchemy.orm import Session

from common.file_store import is_object_key
from common.protocol import MAX_BATCH, MIN_BATCH
from common.states import FailureClass, ResultStatus, TaskKind, TaskState
from common.video import CHOICE_SETTINGS, BadChoice, VideoChoice

from . import statements
from .auth import Client
from .checks import record_checks
from .counts import TaskChange, files_recorded, new_content, shown, tally, videos_recorded
from .database import (
    PreparedRows,
    insert_ignore,
    insert_rows,
    is_postgresql,
    prepare_rows,
    read_only,
    utcnow,
)
from .errors import Conflict, InvalidInput, NotFound
from .events import NO_EVENTS, EventType, Outbox, file_bodies, item_keys, task_body
from .item_state import items_of_posts, refresh_item_states, synchronize
from .known import Candidate, KnownSet, lookup_known
from .metrics import LEASES_EXPIRED
from .models import File, Item, ItemPost, Lease, LeaseState, Task
from .pausing import paused_items
from .policy import LeasePolicy
from .site_state import cooling_sites, in_flight, set_cooldown
from .sites import Site, SiteRegistry
from .transitions import check_interval, failed, file_rows, is_full_check, metadata_done
from .validation import MAX_METADATA_DEPTH, too_deep

log = logging.getLogger(__name__)
#: Found posts per statement when linking them to their items (SQLite's parameter limit).
LINK_CHUNK = 5000


#: The hot paths use Core on the tables: no ORM identity map or unit of work per task.
@dataclass(frozen=True)
class LeaseInfo:
    id: str
    kind: str
    site: str | None
    state: str
    seconds: int
    task_count: int
    expires_at: datetime


@dataclass
class Grant:
    """What a lease request got: a lease with tasks, or nothing and when to ask again."""

    lease: LeaseInfo | None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    retry_after: int | None = None


@dataclass
class SubmitOutcome:
    #: The lease's kind and site (a download lease's), for the caller's counters.
    kind: str | None = None
    site: str | None = None
    accepted: list[int] = field(default_factory=list)
    #: Results already recorded for this lease (a re-sent submit): nothing changed.
    unchanged: list[int] = field(default_factory=list)
    #: Tasks this lease does not hold (reclaimed and handed on, or never its own).
    conflicts: list[int] = field(default_factory=list)
    download_tasks_created: int = 0


# --------------------------------------------------------------------------- lease


def lease_tasks(
    session: Session,
    *,
    client: Client,
    kind: str,
    n: int,
    sites: SiteRegistry,
    policy: LeasePolicy,
    site: str | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
    events: Outbox = NO_EVENTS,
) -> Grant:
    """Lease up to ``n`` queued tasks of ``kind`` (of ``site``; downloads need one)."""
    now = now or utcnow()
    kind = _check_kind(kind)
    if isinstance(n, bool) or not isinstance(n, int) or not MIN_BATCH <= n <= MAX_BATCH:
        raise InvalidInput.at(["n"], f"must be an integer from {MIN_BATCH} to {MAX_BATCH}")
    if kind == TaskKind.DOWNLOAD and site is None:
        raise InvalidInput.at(["site"], "download leases are per site: name the site")
    if site is not None and site not in sites:
        raise InvalidInput.at(["site"], f"unknown site {site!r}; known: {', '.join(sites.names()) or 'none'}")

    reclaim_expired(session, policy=policy, now=now, events=events)
    count = tally(session)
    for promoted in session.connection().execute(statements.PROMOTE_DUE, {"now": now}):
        count.task_moved(promoted.kind, promoted.site, TaskState.SCHEDULED, shown(TaskState.QUEUED, promoted.attempts))

    configured = sites.get(site) if site else None
    if kind == TaskKind.DOWNLOAD and configured is not None and configured.max_in_flight:
        n = min(n, configured.max_in_flight - in_flight(session, site, now))
        if n <= 0:
            session.commit()
            return Grant(None, retry_after=policy.empty_queue_retry_after)

    lease_id = secrets.token_urlsafe(32)
    statement = statements.lease_statement(kind, site is not None)
    parameters = {"now": now, "n": n, "new_lease_id": lease_id, "only_site": site}
    result = session.connection().execute(statement, parameters)
    columns, leased = tuple(result.keys()), result.all()
    if not leased:
        # Nothing to hand out: say how long to wait (until the site's cooldown ends, if any).
        cooling = cooling_sites(session, now)
        session.commit()
        if site is not None and site in cooling:
            return Grant(None, retry_after=_seconds_until(cooling[site], now))
        return Grant(None, retry_after=policy.empty_queue_retry_after)

    for (leased_site, was), leased_count in collections.Counter(
        (row.site, shown(TaskState.QUEUED, row.attempts)) for row in leased
    ).items():
        count.task_moved(kind, leased_site, was, TaskState.LEASED, leased_count)
    length = policy.lease_length(kind, lease_seconds)
    lease = LeaseInfo(lease_id, kind, site, LeaseState.ACTIVE, int(length.total_seconds()), len(leased), now + length)
    session.connection().execute(
        statements.INSERT_LEASE,
        {
            "id": lease.id,
            "kind": kind,
            "site": site,
            "client_id": client.id,
            "state": lease.state,
            "task_count": lease.task_count,
            "seconds": lease.seconds,
            "created_at": now,
            "expires_at": lease.expires_at,
        },
    )
    items = _items_of(session, leased) if kind == TaskKind.METADATA else None
    session.commit()
    # Shaped after the commit: on SQLite every other writer waits while this transaction is open.
    tasks = [dict(zip(columns, row, strict=True)) for row in leased]  # Row._asdict: ~4x the time
    tasks.sort(key=lambda task: (-task["priority"], task["id"]))
    if items is not None:  # metadata tasks carry their item (key, title, query...) for the node
        for task in tasks:
            task["item"] = items.get(task["item_id"])
        _add_check_orders(session, tasks, sites, policy)
    elif configured is not None and configured.engine == "yt-dlp":
        _add_video_orders(session, tasks, configured)
    return Grant(lease, tasks)


def _add_video_orders(session: Session, tasks: list[dict[str, Any]], site: Site) -> None:
    """A yt-dlp download carries its format, container and limits: the site's, each
    overridden by what the item that found it says (the inventory's own columns)."""
    item_ids = {task["item_id"] for task in tasks if task.get("item_id") is not None}
    choices: dict[int, VideoChoice] = {}
    if item_ids:
        read_only(session)
        for item_id, extra in session.execute(select(Item.id, Item.extra).where(Item.id.in_(item_ids))):
            own = {name: value for name, value in (extra or {}).items() if name in CHOICE_SETTINGS}
            if own:
                try:
                    choices[item_id] = site.video.overridden_by(VideoChoice.parse(own))
                except BadChoice:  # checked at import; a row written before that check keeps the site's
                    pass
        session.commit()
    for task in tasks:
        order = choices.get(task.get("item_id"), site.video).as_order()
        if order:
            task["video"] = order


def _add_check_orders(session: Session, tasks: list[dict[str, Any]], sites: SiteRegistry, policy: LeasePolicy) -> None:
    """A subscription's task says which check this is; a re-check that need not go to the
    end also carries the newest posts the last check saw, and stops after
    ``stop_after_known`` of them in a row (newest first: what follows is known too)."""
    orders = {}
    for task in tasks:
        view = _TaskView(task)
        if check_interval(view, sites, policy) is None:
            continue
        full = is_full_check(view, policy)
        orders[task["id"]] = {
            "number": (task["check_count"] or 0) + 1,
            "full": full,
            "stop_after_known": None if full else policy.stop_after_known,
            "known_ids": [],
        }
    partial = [task_id for task_id, order in orders.items() if not order["full"]]
    if partial:
        read_only(session)
        for task_id, head in session.execute(statements.LAST_HEADS, {"task_ids": partial}):
            orders[task_id]["known_ids"] = list(head or [])
        session.commit()
    for task in tasks:
        if task["id"] in orders:
            task["check"] = orders[task["id"]]


class _TaskView:
    """A leased task's dict seen as the row ``transitions`` reads."""

    def __init__(self, task: dict[str, Any]):
        self.__dict__.update(task)


def _items_of(session: Session, tasks: Sequence[Any]) -> dict[int, dict[str, Any]]:
    item_ids = {task.item_id for task in tasks if task.item_id is not None}
    rows = session.execute(
        select(Item.id, Item.key, Item.title, Item.query, Item.url, Item.extra).where(Item.id.in_(item_ids))
    ).all()
    return {row.id: row._asdict() for row in rows}


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


def _check_kind(kind: str) -> TaskKind:
    try:
        return TaskKind(kind)
    except ValueError:
        raise InvalidInput.at(["kind"], f"must be one of {', '.join(TaskKind)}") from None


# ------------------------------------------------------------ extend and release


def _locked_lease(session: Session, lease_id: str, client: Client) -> Lease:
    lease = session.scalar(
        select(Lease).where(Lease.id == lease_id).with_for_update().execution_options(populate_existing=True)
    )
    if lease is None or lease.client_id != client.id:
        raise NotFound(f"no lease {lease_id!r} held by {client.name!r}")
    return lease


def extend_lease(
    session: Session,
    *,
    lease_id: str,
    client: Client,
    policy: LeasePolicy,
    seconds: int | None = None,
    now: datetime | None = None,
) -> Lease:
    """Heartbeat: the lease now expires ``seconds`` (default: its own length) from ``now``,
    never earlier than before.

    An expired lease that nobody reclaimed yet can still be extended: its tasks were
    never handed on. One that was reclaimed cannot (409).
    """
    now = now or utcnow()
    lease = _locked_lease(session, lease_id, client)
    if lease.state != LeaseState.ACTIVE:
        session.rollback()
        raise Conflict(f"lease {lease_id} is {lease.state}; it can no longer be extended", extra={"state": lease.state})
    length = policy.lease_length(lease.kind, lease.seconds if seconds is None else seconds)
    lease.expires_at = max(lease.expires_at, now + length)
    session.commit()
    return lease


def release_lease(
    session: Session,
    *,
    lease_id: str,
    client: Client,
    task_ids: Sequence[int] | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Hand tasks (all unfinished ones by default) back to the queue, attempts untouched."""
    now = now or utcnow()
    lease = _locked_lease(session, lease_id, client)
    released: list[int] = []
    if lease.state == LeaseState.ACTIVE:
        statement = (
            update(Task)
            .where(Task.lease_id == lease.id, Task.state == statements.LEASED)
            .values(state=TaskState.QUEUED, lease_id=None, available_at=now, updated_at=now)
            .returning(Task.id, Task.kind, Task.site, Task.attempts)
            .execution_options(synchronize_session=False)
        )
        if task_ids is not None:
            statement = statement.where(Task.id.in_(list(task_ids)))
        rows = session.execute(statement).all()
        count = tally(session)
        for row in rows:
            count.task_moved(row.kind, row.site, TaskState.LEASED, shown(TaskState.QUEUED, row.attempts))
        released = sorted(row.id for row in rows)
        _end_lease_if_empty(session, lease, LeaseState.RELEASED, now)
    session.commit()
    return released


def _end_lease_if_empty(session: Session, lease: Lease, state: LeaseState, now: datetime) -> None:
    still_leased = session.scalar(select(exists().where(Task.lease_id == lease.id, Task.state == statements.LEASED)))
    if not still_leased:
        lease.state = state
        lease.ended_at = now


# ------------------------------------------------------------------------ reclaim


def reclaim_expired(
    session: Session, *, policy: LeasePolicy, now: datetime | None = None, events: Outbox = NO_EVENTS
) -> int:
    """Put the unfinished tasks of expired leases back in the queue; returns how many.

    An expired lease counts as an unsuccessful attempt, so a task that kills every node
    that tries it ends up dead instead of circulating forever. Runs inside the caller's
    transaction (the next lease request), and skips leases another process is handling.
    """
    now = now or utcnow()
    expired = session.connection().execute(statements.EXPIRED_LEASES, {"now": now}).all()
    if not expired:
        return 0
    lease_ids = [row.id for row in expired]
    LEASES_EXPIRED.inc(len(lease_ids))
    session.execute(
        update(Lease)
        .where(Lease.id.in_(lease_ids))
        .values(state=LeaseState.EXPIRED, ended_at=now)
        .execution_options(synchronize_session=False)
    )
    max_attempts = case(
        (Task.kind == TaskKind.METADATA, policy.max_attempts[TaskKind.METADATA]),
        else_=policy.max_attempts[TaskKind.DOWNLOAD],
    )
    item_paused = exists().where(Item.id == Task.item_id, Item.paused_at.is_not(None))
    reclaimed = session.execute(
        update(Task)
        .where(Task.lease_id.in_(lease_ids), Task.state == statements.LEASED)
        .values(
            state=case(
                (Task.attempts + 1 >= max_attempts, TaskState.DEAD),
                (item_paused, TaskState.PAUSED),
                else_=TaskState.QUEUED,
            ),
            attempts=Task.attempts + 1,
            lease_id=None,
            available_at=now,
            error_class=FailureClass.TRANSIENT,
            last_error="lease expired before a result arrived",
            last_error_at=now,
            updated_at=now,
        )
        .returning(Task.id, Task.kind, Task.site, Task.remote_id, Task.item_id, Task.state, Task.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    count = tally(session)
    for row in reclaimed:
        count.task_moved(row.kind, row.site, TaskState.LEASED, shown(row.state, row.attempts))
    if reclaimed:
        log.warning(
            "reclaimed %d task(s) from %d expired lease(s) of client id(s) %s",
            len(reclaimed),
            len(lease_ids),
            sorted({row.client_id for row in expired}),
        )
    dead = [row for row in reclaimed if row.state == TaskState.DEAD]
    refresh_item_states(session, {row.item_id for row in dead if row.kind == TaskKind.METADATA})
    if events.enabled and dead:
        error = {"error_class": FailureClass.TRANSIENT.value, "error": "lease expired before a result arrived"}
        keys = item_keys(session, (row.item_id for row in dead))
        events.add(session, EventType.TASK_DEAD, (task_body(row, keys) | error for row in dead), now)
        _settled(session, events, _touched_items(session, dead), now)
    return len(reclaimed)


def _touched_items(session: Session, tasks: Sequence[Any]) -> set[int]:
    """The items whose synchronization these tasks may change: a metadata task's own, and
    every item that found a download."""
    items = {task.item_id for task in tasks if task.kind == TaskKind.METADATA and task.item_id is not None}
    # a download no item found (item_id: its first finder) is linked to none
    found = [task.id for task in tasks if task.kind == TaskKind.DOWNLOAD and task.item_id is not None]
    return items | items_of_posts(session, found)


def _settled(session: Session, events: Outbox, item_ids: set[int], now: datetime) -> None:
    """``item.synchronized`` for each of these items whose every found post is now settled."""
    if events.enabled and item_ids:
        newly = synchronize(session, item_ids, now)
        events.add(session, EventType.ITEM_SYNCHRONIZED, ({"item_id": i, "item_key": k} for i, k in newly), now)


# ------------------------------------------------------------------------- submit


def submit_results(
    session: Session,
    *,
    lease_id: str,
    client: Client,
    results: Sequence[Mapping[str, Any]],
    sites: SiteRegistry,
    policy: LeasePolicy,
    now: datetime | None = None,
    events: Outbox = NO_EVENTS,
) -> SubmitOutcome:
    """Record results for tasks of one lease, in one transaction.

    Each result is ``{"task_id", "status": "done"|"failed", ...}``; see the schemas.
    Results for tasks the lease no longer holds are refused (``conflicts``); the rest
    are recorded. A result already recorded for this lease is left as it is, so
    sending the same submit twice is harmless. Input errors raise before any write.

    File records are built before the write transaction (on SQLite it excludes every
    other writer). Inside it: the lease (a primary-key read, cheaper than a transaction
    of its own) and the checks that depend on its kind; then done downloads take one
    optimistic UPDATE that only touches tasks this lease still holds (``RETURNING`` says
    which) and one INSERT of their file records; other outcomes read their tasks first
    and are written as one executemany.
    """
    now = now or utcnow()
    seen: set[int] = set()
    for index, result in enumerate(results):
        if result["task_id"] in seen:
            raise InvalidInput.at(["results", index, "task_id"], f"task {result['task_id']} appears twice")
        seen.add(result["task_id"])
        for position, thing in enumerate(result.get("found") or ()):
            if too_deep(thing.get("metadata")):
                where = ["results", index, "found", position, "metadata"]
                raise InvalidInput.at(where, f"nests deeper than {MAX_METADATA_DEPTH} levels")
    # Only a download lease records files; a metadata result carries none.
    finished = [r for r in results if r["status"] == "done" and r.get("files")]
    video = any("video" in record for r in finished for record in r["files"])
    rows = [row for r in finished for row in file_rows(r["task_id"], client.id, r["files"], now, video=video)]
    files = prepare_rows(session, File.__table__, rows)

    connection = session.connection()  # begins the write transaction
    lease = connection.execute(statements.READ_LEASE, {"lease_id": lease_id}).one_or_none()
    try:
        if lease is None or lease.client_id != client.id:
            raise NotFound(f"no lease {lease_id!r} held by {client.name!r}")
        for index, result in enumerate(results):
            _check_result(index, result, lease.kind, sites)
    except (NotFound, InvalidInput):
        session.rollback()
        raise
    downloads = [r for r in results if r["status"] == "done" and lease.kind == TaskKind.DOWNLOAD]
    others = [r for r in results if not (r["status"] == "done" and lease.kind == TaskKind.DOWNLOAD)]

    outcome = SubmitOutcome(kind=lease.kind, site=lease.site)
    done: set[int] = set()  # downloads this lease still held, now recorded
    if downloads:
        ids = [r["task_id"] for r in downloads]
        parameters = {"ids": ids, "by_lease": lease.id, "by_client": client.id, "now": now}
        recorded = connection.execute(statements.downloaded(is_postgresql(session)), parameters).all()
        done = {task.id for task in recorded}
        _record_files(
            session, recorded, client.id, files if len(done) == len(ids) else files.where_in("task_id", done), now
        )
        outcome.accepted += [r["task_id"] for r in downloads if r["task_id"] in done]
        if events.enabled and recorded:
            keys = item_keys(session, (task.item_id for task in recorded))
            held = {r["task_id"] for r in downloads if r.get("already_on_node")}
            fetched = [task for task in recorded if task.id not in held]
            events.add(session, EventType.FILE_DOWNLOADED, file_bodies(fetched, rows, client.name, keys), now)
            on_node = file_bodies([task for task in recorded if task.id in held], rows, client.name, keys)
            events.add(session, EventType.FILE_SKIPPED, ({"reason": "on_node"} | body for body in on_node), now)
            _settled(session, events, _touched_items(session, recorded), now)
    if others:
        _record_others(session, lease, client, others, sites, policy, now, outcome, events)
    if lease.state == LeaseState.ACTIVE:
        connection.execute(statements.COMPLETE_LEASE, {"of_lease": lease.id, "now": now})
    session.commit()

    refused = [r["task_id"] for r in downloads if r["task_id"] not in done]
    if refused:  # not held by this lease any more: already recorded by it, or someone else's now
        read_only(session)
        recorded = set(
            session.scalars(
                select(statements.TASKS.c.id).where(
                    statements.TASKS.c.id.in_(refused), statements.TASKS.c.result_lease_id == lease.id
                )
            )
        )
        session.commit()
        outcome.unchanged += [task_id for task_id in refused if task_id in recorded]
        outcome.conflicts += [task_id for task_id in refused if task_id not in recorded]
    order = {result["task_id"]: position for position, result in enumerate(results)}
    for ids in (outcome.accepted, outcome.unchanged, outcome.conflicts):
        ids.sort(key=order.__getitem__)
    return outcome


def _record_files(session: Session, recorded, client_id: int, files: PreparedRows, now) -> None:
    """Insert the file records of done downloads, and count them, the node's work and the
    minute's. A record already there (the same path of a task done before and requeued)
    is skipped: then the rows that went in are read back, so only they are counted."""
    if not recorded:
        return
    count = tally(session)
    for site, done in collections.Counter(task.site for task in recorded).items():
        count.task_moved(TaskKind.DOWNLOAD, site, TaskState.LEASED, TaskState.DONE, done)
    count.node(client_id, done=len(recorded))
    count.completed(now, TaskKind.DOWNLOAD, client_id, done=len(recorded))
    sha256, size = files.columns.index("sha256"), files.columns.index("size")
    new = new_content(session, (row[sha256] for row in files.values))
    video = "duration" in files.columns
    if insert_rows(session, files) == len(files.values):
        inserted = [(row[sha256], row[size]) for row in files.values]
        if video:
            task_id, duration = files.columns.index("task_id"), files.columns.index("duration")
            probed = [(row[task_id], row[duration]) for row in files.values]
    else:
        read = session.execute(
            select(File.sha256, File.size, File.task_id, File.duration).where(
                File.task_id.in_([task.id for task in recorded]), File.client_id == client_id, File.created_at == now
            )
        ).all()
        inserted = [(row.sha256, row.size) for row in read]
        probed = [(row.task_id, row.duration) for row in read]
    files_recorded(session, client_id, inserted, new, now)
    if video:
        site_of = {task.id: task.site for task in recorded}
        videos_recorded(session, ((site_of[task_id], seconds) for task_id, seconds in probed if seconds))


def _record_others(session, lease, client, results, sites, policy, now, outcome: SubmitOutcome, events: Outbox) -> None:
    """Failures and metadata results: they depend on each task's attempts, so read first."""
    ids = [r["task_id"] for r in results]
    held = {
        row.id: row for row in session.connection().execute(statements.held_tasks(is_postgresql(session)), {"ids": ids})
    }
    changes: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    cooldowns: dict[str, tuple[datetime, str]] = {}
    metadata_items: set[int] = set()
    known = lookup_known(session, _candidates(results, sites)) if lease.kind == TaskKind.METADATA else KnownSet()
    paused = paused_items(session, {row.item_id for row in held.values()})
    checked: list[tuple[Any, Mapping[str, Any], Any]] = []
    dead: list[tuple[Any, dict[str, Any]]] = []
    known_posts: list[tuple[Any, dict[str, Any]]] = []
    for result in results:
        task = held.get(result["task_id"])
        if task is None or task.kind != lease.kind:
            outcome.conflicts.append(result["task_id"])
            continue
        if task.lease_id != lease.id or task.state != TaskState.LEASED:
            (outcome.unchanged if task.result_lease_id == lease.id else outcome.conflicts).append(task.id)
            continue
        outcome.accepted.append(task.id)
        if result["status"] == ResultStatus.DONE:
            change = metadata_done(
                task, result, lease_id=lease.id, done_by=client.id, policy=policy, sites=sites, known=known, now=now
            )
        else:
            change = failed(task, result, lease_id=lease.id, policy=policy, now=now, sites=sites)
        if task.item_id in paused and change.values["state"] in (TaskState.QUEUED, TaskState.SCHEDULED):
            change.values["state"] = TaskState.PAUSED  # finished as leased; waits for its item's resume
        for row in change.new_downloads:
            if task.item_id in paused and row["state"] == TaskState.QUEUED:
                row["state"] = TaskState.PAUSED
        changes.append(change.values)
        found.extend(change.new_downloads)
        if change.values["state"] == TaskState.DEAD:
            dead.append((task, change.values))
        known_posts += [(task, post) for post in change.known_posts]
        if task.kind == TaskKind.METADATA:
            checked.append((task, result, change))
        if change.cooldown is not None:
            until, reason = change.cooldown
            if task.site not in cooldowns or cooldowns[task.site][0] < until:
                cooldowns[task.site] = (until, reason)
        if task.kind == TaskKind.METADATA and task.item_id is not None:
            metadata_items.add(task.item_id)
    if changes:
        session.connection().execute(
            statements.CHANGE_TASK, [{f"b_{name}": value for name, value in change.items()} for change in changes]
        )
        _count_changes(session, held, changes, client.id, now)
    if found:
        tasks = statements.TASKS
        created = session.execute(
            insert_ignore(session, tasks).returning(tasks.c.id, tasks.c.site, tasks.c.remote_id, tasks.c.state), found
        ).all()
        count = tally(session)
        for row in created:
            count.task_moved(TaskKind.DOWNLOAD, row.site, None, row.state)
        outcome.download_tasks_created += len(created)
        created_ids = {(row.site, row.remote_id): row.id for row in created}
        _link_found_posts(session, found, created_ids, now)
    else:
        created_ids = {}
    gone = record_checks(session, checked, created_ids, client_id=client.id, policy=policy, now=now) if checked else []
    cooled = [
        {"site": site_name, "until": until.isoformat(), "reason": reason}
        for site_name, (until, reason) in cooldowns.items()
        if set_cooldown(session, site_name, until, reason, now)
    ]
    refresh_item_states(session, metadata_items)
    if events.enabled:
        _announce(session, events, now, dead, known_posts, found, created_ids, gone, cooled)
        _settled(session, events, metadata_items | _touched_items(session, [task for task, _ in dead]), now)


def _count_changes(session: Session, held, changes: list[dict[str, Any]], client_id: int, now) -> None:
    """Leased tasks given their results: where each went, and what its node completed."""
    count = tally(session)
    count.task_rows(
        TaskChange(
            held[change["id"]].kind,
            held[change["id"]].site,
            TaskState.LEASED,
            shown(change["state"], change["attempts"]),
            done_by=change["done_by"],
            was_known=held[change["id"]].known_count,
            known_count=change["known_count"],
        )
        for change in changes
    )
    for change in changes:
        if change["done_at"] == now and change["done_by"] is not None:
            count.completed(now, held[change["id"]].kind, client_id, done=1)


def _announce(session, events: Outbox, now, dead, known_posts, found, created_ids, gone, cooled) -> None:
    """The events of a submit of failures and metadata results."""
    duplicates = [row for row in found if row["state"] == TaskState.DUPLICATE]
    keys = item_keys(
        session,
        [task.item_id for task, _ in dead]
        + [task.item_id for task, _ in known_posts]
        + [row["item_id"] for row in duplicates]
        + [post["item_id"] for post in gone],
    )
    events.add(
        session,
        EventType.TASK_DEAD,
        (task_body(task, keys) | {"error_class": v["error_class"], "error": v["last_error"]} for task, v in dead),
        now,
    )
    skipped = [
        {"reason": "known", "site": post["site"], "remote_id": post["remote_id"], "url": post["url"]}
        | {"item_key": keys.get(task.item_id), "found_by_task_id": task.id}
        for task, post in known_posts
    ]
    skipped += [
        {"reason": "duplicate", "site": row["site"], "remote_id": row["remote_id"], "url": row["url"]}
        | {"item_key": keys.get(row["item_id"]), "task_id": created_ids[(row["site"], row["remote_id"])]}
        | {"duplicate_of_file_id": row["duplicate_of"]}
        for row in duplicates
        if (row["site"], row["remote_id"]) in created_ids
    ]
    events.add(session, EventType.FILE_SKIPPED, skipped, now)
    events.add(session, EventType.SITE_COOLDOWN, cooled, now)
    events.add(
        session,
        EventType.POST_GONE_UPSTREAM,
        ({k: v for k, v in post.items() if k != "item_id"} | {"item_key": keys.get(post["item_id"])} for post in gone),
        now,
    )


def _candidates(results: Sequence[Mapping[str, Any]], sites: SiteRegistry) -> list[Candidate]:
    """Every post the done metadata results found, as the known-files lookup sees them."""
    candidates = []
    for result in results:
        if result["status"] != ResultStatus.DONE:
            continue
        for thing in result.get("found") or ():
            site = sites.get(thing["site"])
            remote_id, metadata = str(thing["remote_id"]), thing.get("metadata") or {}
            url = site.download_url_for(remote_id, metadata, thing.get("url"))
            candidates.append(Candidate(site.name, remote_id, url, site.published_hashes(metadata)))
    return candidates


def _link_found_posts(
    session: Session, found: list[dict[str, Any]], created: dict[tuple[str, str], int], now: datetime
) -> None:
    """Each item lists every post it found, also those another item found first (one
    download task per post): the ids of posts that had a task already in one select, the
    links in one insert."""
    finders: dict[tuple[str, str], set[int]] = {}
    for row in found:
        if row["item_id"] is not None:
            finders.setdefault((row["site"], row["remote_id"]), set()).add(row["item_id"])
    task_ids = {pair: created[pair] for pair in finders if pair in created}
    older = sorted(pair for pair in finders if pair not in created)
    for start in range(0, len(older), LINK_CHUNK):
        chunk = {"pairs": older[start : start + LINK_CHUNK]}
        task_ids.update(
            ((site, remote_id), task_id) for task_id, site, remote_id in session.execute(statements.DOWNLOAD_IDS, chunk)
        )
    links = [
        {"item_id": item, "task_id": task_id, "found_at": now}
        for pair, task_id in task_ids.items()
        for item in finders[pair]
    ]
    if links:
        insert_rows(session, prepare_rows(session, ItemPost.__table__, links))


def _check_result(index: int, result: Mapping[str, Any], kind: str, sites: SiteRegistry) -> None:
    """Shape rules that depend on the task's kind (the schema checks the rest)."""
    where = ["results", index]
    if result["status"] == "failed":
        if not result.get("error_class"):
            raise InvalidInput.at([*where, "error_class"], "a failed result needs an error_class")
        return
    if kind == TaskKind.DOWNLOAD:
        if not result.get("files"):
            raise InvalidInput.at([*where, "files"], "a done download lists at least one file")
        for position, record in enumerate(result["files"]):
            if "store_key" in record and not is_object_key(record["store_key"], record["sha256"].lower()):
                raise InvalidInput.at([*where, "files", position, "store_key"], "is not the object of this sha256")
            if record.get("kept") is False and "store_key" not in record:
                raise InvalidInput.at([*where, "files", position, "kept"], "a file not kept must be in the file store")
        return
    if result.get("found") is None:
        raise InvalidInput.at([*where, "found"], "a done metadata result lists what was found (an empty list: nothing)")
    for position, thing in enumerate(result["found"]):
        site = sites.get(thing["site"])
        if site is None:
            raise InvalidInput.at([*where, "found", position, "site"], f"unknown site {thing['site']!r}")
        if site.download_url_for(str(thing["remote_id"]), thing.get("metadata") or {}, thing.get("url")) is None:
            raise InvalidInput.at(
                [*where, "found", position, "url"], f"site {site.name!r} has no post_url: send the url"
            )
