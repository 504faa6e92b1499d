"""Counts kept as the archive changes, so that ``/stats``, ``/metrics`` and the dashboard
read a few small tables instead of counting tasks, items and files at every look.

Every write that moves a task or an item to another state, or records files, tells the
session's ``Tally`` what it changed (it knows: the statement's ``RETURNING`` rows, or the
rows it read under lock). Just before the transaction commits, the tally is written as
one upsert per table for the whole batch (on PostgreSQL, one statement for all of them),
last in the transaction and in key order: a transaction holding a count row then only
waits for other count rows, never in a cycle.
A rollback forgets it. On PostgreSQL each count is split into ``SHARDS`` rows by the
connection's backend pid, so concurrent transactions seldom wait for the same row;
readers add the shards up.

``flask stats rebuild`` (``rebuild``) counts everything again from the tables: after an
upgrade, or to check (``tests/test_counts.py`` compares the two after a random mix of work).
"""

from __future__ import annotations

import collections
import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, case, delete, event, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState

from .database import in_list, is_postgresql, read_only
from .models import Counter, File, Item, KnownFile, MinuteCount, NodeCount, Task, TaskCount

SHARDS = 16
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Minutes kept: the dashboard shows a day.
MINUTES_KEPT = timedelta(hours=25)
#: Rows per statement when a counted update goes through many rows.
UPDATE_CHUNK = 10_000

TASKS, ITEMS, FILES = Task.__table__, Item.__table__, File.__table__
TASK_COUNTS, NODE_COUNTS, MINUTE_COUNTS, COUNTERS = (
    TaskCount.__table__,
    NodeCount.__table__,
    MinuteCount.__table__,
    Counter.__table__,
)
KEPT_TABLES = (TASK_COUNTS, NODE_COUNTS, MINUTE_COUNTS, COUNTERS)
#: Each kept table's part of a recount (``recounted``).
PART_OF = {"task_counts": "tasks", "node_counts": "nodes", "minute_counts": "minutes", "counters": "counters"}

#: The columns an anchor (``known_files``) names a file by.
KNOWN_COLUMNS = ("remote_id", "url_key", "sha256", "md5")
#: Names in ``counters``.
UNIQUE_FILES, UNIQUE_BYTES, KNOWN_SKIPPED, GONE_UPSTREAM = "unique_files", "unique_bytes", "known_skipped", "gone"


def item_counter(state: str) -> str:
    return f"items.{state}"


#: A queued task that failed before is counted apart (the dashboard shows it as retrying);
#: /stats and /metrics add it to ``queued``.
RETRYING = "retrying"


def shown(state: str | None, attempts: int | None) -> str | None:
    """The state a task is counted under: ``retrying`` for a queued task with attempts."""
    return RETRYING if state == TaskState.QUEUED and attempts else state


def video_counter(site: str) -> str:
    """Milliseconds of video and audio recorded for a site (its files' probed durations)."""
    return f"video_ms.{site}"


def known_counter(column: str) -> str:
    """Anchors naming a post (remote_id), a URL (url_key), a sha256 or an md5."""
    return f"known.{column}"


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class Tally:
    """What one transaction changed, as count deltas; written by ``_write`` at commit."""

    tasks: collections.Counter = field(default_factory=collections.Counter)  # (kind, site, state)
    counters: collections.Counter = field(default_factory=collections.Counter)  # name
    nodes: dict[int, list[int]] = field(default_factory=dict)  # client -> [tasks_done, files, bytes]
    minutes: dict[tuple[datetime, str, int], list[int]] = field(default_factory=dict)  # -> [done, bytes]

    def __bool__(self) -> bool:
        return bool(self.tasks or self.counters or self.nodes or self.minutes)

    def task_moved(self, kind: str, site: str, was: str | None, state: str | None, n: int = 1) -> None:
        """``n`` tasks went from ``was`` to ``state`` (None: created / deleted)."""
        if was == state:
            return
        if was is not None:
            self.tasks[(kind, site, was)] -= n
        if state is not None:
            self.tasks[(kind, site, state)] += n

    def node(self, client_id: int, *, done: int = 0, files: int = 0, size: int = 0) -> None:
        entry = self.nodes.setdefault(client_id, [0, 0, 0])
        entry[0] += done
        entry[1] += files
        entry[2] += size

    def completed(self, at: datetime, kind: str, client_id: int, *, done: int = 0, size: int = 0) -> None:
        """Tasks completed / bytes recorded at ``at`` by a node (the per-minute history)."""
        entry = self.minutes.setdefault((minute_of(at), kind, client_id), [0, 0])
        entry[0] += done
        entry[1] += size

    def task_rows(self, rows: Iterable[Any]) -> None:
        """Tasks before and after a change, each a ``TaskChange``-shaped row."""
        for row in rows:
            self.task_moved(row.kind, row.site, row.was, row.state)
            if row.was == TaskState.DONE and row.was_by is not None:
                self.node(row.was_by, done=-1)
            if row.state == TaskState.DONE and row.done_by is not None:
                self.node(row.done_by, done=1)
            if row.kind == TaskKind.METADATA and (row.was_known or 0) != (row.known_count or 0):
                self.counters[KNOWN_SKIPPED] += (row.known_count or 0) - (row.was_known or 0)


@dataclass(frozen=True)
class TaskChange:
    """One task before and after a write, as ``Tally.task_rows`` reads it (states as
    ``shown`` gives them)."""

    kind: str
    site: str
    was: str | None
    state: str | None
    was_by: int | None = None
    done_by: int | None = None
    was_known: int | None = None
    known_count: int | None = None


#: Only for the benchmark that measures what keeping counts costs (``bench/throughput.py``):
#: with it set, nothing is counted and ``/stats`` is wrong.
WITHOUT_COUNTS = os.environ.get("FETCHFLEET_BENCH_WITHOUT_COUNTS") == "1"


def tally(session: Session) -> Tally:
    """The tally of the session's current transaction."""
    if WITHOUT_COUNTS:
        return Tally()  # written nowhere
    found = session.info.get("tally")
    if found is None:
        found = session.info["tally"] = Tally()
    return found


@event.listens_for(Session, "before_commit")
def _write_on_commit(session: Session) -> None:
    pending = session.info.pop("tally", None)
    if pending:
        _write(session.connection(), pending)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop("tally", None)


# ------------------------------------------------------------------- writing


def write(connection: Connection, pending: Tally) -> None:
    """Add a tally to the kept counts now (``bench/fill.py``, which loads rows directly)."""
    _write(connection, pending)


def _write(connection: Connection, pending: Tally) -> None:
    rows = {
        TASK_COUNTS: [(*key, n) for key, n in sorted(pending.tasks.items()) if n],
        NODE_COUNTS: [(client, *amounts) for client, amounts in sorted(pending.nodes.items())],
        MINUTE_COUNTS: [(*key, *amounts) for key, amounts in sorted(pending.minutes.items())],
        COUNTERS: [(name, n) for name, n in sorted(pending.counters.items()) if n],
    }
    if connection.dialect.name == "postgresql":
        # One statement for the tables that changed, each one's rows as one JSON text:
        # a commit waits for one round trip, not one per table.
        changed = tuple(table for table in KEPT_TABLES if rows[table])
        if changed:
            connection.exec_driver_sql(_upsert_json(changed), tuple(_json(table, rows[table]) for table in changed))
    else:
        for table in KEPT_TABLES:
            _add(connection, table, rows[table])
    if pending.minutes:
        _prune_minutes(connection, max(minute for minute, _, _ in pending.minutes))


def _json(table: Table, rows: list[tuple]) -> str:
    """A table's rows as the JSON ``_upsert_json`` reads (timestamps in ISO 8601)."""
    names = _columns(table)
    return json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=datetime.isoformat)


def _add(connection: Connection, table: Table, rows: list[tuple], *, recount: bool = False) -> None:
    """Add each row's amounts (key columns, then amounts, as ``_columns`` names them)
    to its count (created at the first change); ``recount``: into shard 0. Sent as the
    driver's own executemany: this runs at nearly every commit on SQLite."""
    if not rows:
        return
    postgresql = connection.dialect.name == "postgresql"
    sql = _upsert(postgresql, table, recount)
    if postgresql:
        connection.exec_driver_sql(sql, rows)
        return
    if table is MINUTE_COUNTS:  # its minute (first) as the text UTCDateTime stores on SQLite
        rows = [(_sqlite_time(row[0]), *row[1:]) for row in rows]
    # Straight to sqlite3: SQLAlchemy's handling of even a driver-level statement cost
    # more than the upsert, inside the one writer's lock.
    connection.connection.driver_connection.executemany(sql, rows)


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


#: The columns each kept table adds up.
AMOUNTS = {"task_counts": ("n",), "node_counts": ("tasks_done", "files", "bytes"), "minute_counts": ("done", "bytes")}


def _key(table: Table) -> tuple[str, ...]:
    """A kept table's key, without the shard."""
    return tuple(column.name for column in table.primary_key.columns if column.name != "shard")


def _amounts(table: Table) -> tuple[str, ...]:
    return AMOUNTS.get(table.name, ("n",))


def _columns(table: Table) -> tuple[str, ...]:
    """The columns a kept table's rows give, in order: its key, then the amounts it adds."""
    return (*_key(table), *_amounts(table))


def _shard(postgresql: bool, recount: bool) -> str:
    return f"pg_backend_pid() %% {SHARDS}" if postgresql and not recount else "0"  # %%: a literal % to psycopg


def _on_conflict(table: Table) -> str:
    updates = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in _amounts(table))
    return f"ON CONFLICT ({', '.join(_key(table))}, shard) DO UPDATE SET {updates}"


@functools.cache
def _upsert(postgresql: bool, table: Table, recount: bool) -> str:
    """The upsert of one kept table's rows (``_columns``), built once."""
    columns = _columns(table)
    placeholders = ", ".join(["%s" if postgresql else "?"] * len(columns))
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}, shard) "
        f"VALUES ({placeholders}, {_shard(postgresql, recount)}) {_on_conflict(table)}"
    )


@functools.cache
def _upsert_json(tables: tuple[Table, ...]) -> str:
    """On PostgreSQL, the upserts of these kept tables as one statement, each table's rows
    given as one JSON parameter (in key order). PostgreSQL runs the last INSERT first,
    then the WITH parts from the last to the first: whichever tables changed, every
    commit writes them in one order (``KEPT_TABLES`` reversed), so two commits that
    wait for each other's count rows never wait in a cycle."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    parts = []
    for table in tables:
        names = _columns(table)
        columns = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in names)
        parts.append(
            f"INSERT INTO {table.name} ({', '.join(names)}, shard) "
            f"SELECT {', '.join(names)}, {_shard(True, False)} FROM json_to_recordset(%s) AS added({columns}) "
            f"{_on_conflict(table)}"
        )
    *first, last = parts
    if not first:
        return last
    return f"WITH {', '.join(f'added_{n} AS ({part})' for n, part in enumerate(first))} {last}"


_pruned_before: dict[int, datetime] = {}


def _prune_minutes(connection: Connection, newest: datetime) -> None:
    """Forget minutes older than a day, once per new minute per process."""
    key = id(connection.engine)
    if _pruned_before.get(key) == newest:
        return
    _pruned_before[key] = newest
    connection.execute(delete(MINUTE_COUNTS).where(MINUTE_COUNTS.c.minute < newest - MINUTES_KEPT))


# ---------------------------------------------------------- counted updates


_TRACKED = {"tasks": ("state", "attempts", "done_by", "known_count"), "items": ("state",)}


def update_counted(session: Session, table: Table, where, values: dict[str, Any], returning: Sequence = ()) -> list:
    """``UPDATE table SET values WHERE where`` (tasks or items) for a write that cannot tell
    from its own statement which states its rows left: their states are read first, under
    lock (rows in id order), and the update goes through those rows only. Returns the
    rows changed, with their id, tracked columns and ``returning`` columns."""
    tracked = _TRACKED[table.name]
    names = {"id", *tracked}
    returning = [column for column in returning if column.name not in names]
    key_columns = (table.c.kind, table.c.site) if table is TASKS else ()
    before = (
        select(table.c.id, *key_columns, *(table.c[name] for name in tracked))
        .where(where)
        .order_by(table.c.id)
        .with_for_update()
    )
    old = {row.id: row for row in session.execute(before)}
    if not old:
        return []
    postgresql = is_postgresql(session)
    statement = (
        update(table)
        .where(in_list(table.c.id, "ids", postgresql))
        .values(values)
        .returning(table.c.id, *(table.c[name] for name in tracked), *returning)
        .execution_options(synchronize_session=False)
    )
    ids, changed = list(old), []
    for start in range(0, len(ids), UPDATE_CHUNK):
        changed += session.execute(statement, {"ids": ids[start : start + UPDATE_CHUNK]}).all()
    count = tally(session)
    if table is TASKS:
        count.task_rows(
            TaskChange(
                old[row.id].kind,
                old[row.id].site,
                shown(old[row.id].state, old[row.id].attempts),
                shown(row.state, row.attempts),
                old[row.id].done_by,
                row.done_by,
                old[row.id].known_count,
                row.known_count,
            )
            for row in changed
        )
    else:
        for row in changed:
            if old[row.id].state != row.state:
                count.counters[item_counter(old[row.id].state)] -= 1
                count.counters[item_counter(row.state)] += 1
    return changed


#: Transaction-scoped locks on content hashes, taken in hash order (no cycle between two submits).
LOCK_CONTENT = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(h, 0)) FROM "
    "(SELECT h FROM unnest(CAST(:hashes AS text[])) AS h ORDER BY h) AS sorted"
)


def new_content(session: Session, hashes: Iterable[str]) -> set[str]:
    """Which of these sha256 no file has yet: call it before inserting the files.

    On PostgreSQL each of them is then locked (an advisory lock, in hash order, held to
    commit) and looked up again: of two submits of the same new content, the second
    waits for the first and sees its file, so the content is counted once. Content
    already held takes no lock: many submits of it go on side by side."""
    hashes = sorted(set(hashes))
    if not hashes or WITHOUT_COUNTS:
        return set()
    connection = session.connection()  # Core, not the ORM session: this runs at every submit
    if not is_postgresql(session):  # one writer at a time: nothing can come in between
        held = connection.connection.driver_connection.execute(HELD_SQLITE, (json.dumps(hashes),))
        return set(hashes).difference(value for (value,) in held)
    new = sorted(set(hashes).difference(connection.execute(HELD_POSTGRESQL, {"hashes": hashes}).scalars()))
    if new:
        connection.execute(LOCK_CONTENT, {"hashes": new})
        new = sorted(set(new).difference(connection.execute(HELD_POSTGRESQL, {"hashes": new}).scalars()))
    return set(new)


#: Which of a list of hashes some file has: one index probe each (EXISTS stops at the
#: first file; a content held a million times costs no more than one held once).
HELD_POSTGRESQL = text(
    "SELECT h FROM unnest(CAST(:hashes AS text[])) AS h WHERE EXISTS (SELECT 1 FROM files WHERE files.sha256 = h)"
)
HELD_SQLITE = "SELECT value FROM json_each(?) WHERE EXISTS (SELECT 1 FROM files WHERE files.sha256 = json_each.value)"


def files_recorded(
    session: Session, client_id: int, files: Sequence[tuple[str, int]], new: set[str], now: datetime
) -> None:
    """A node recorded these files (sha256, size; ``new``: hashes no file had before):
    its totals, the minute's bytes, the distinct content the archive holds."""
    if not files:
        return
    size = sum(size for _, size in files)
    count = tally(session)
    count.node(client_id, files=len(files), size=size)
    count.completed(now, TaskKind.DOWNLOAD, client_id, size=size)
    first: dict[str, int] = {}  # a content's size is its first file's (one a node lied about counts once)
    for sha256, file_size in files:
        if sha256 in new:
            first.setdefault(sha256, file_size)
    count.counters[UNIQUE_FILES] += len(first)
    count.counters[UNIQUE_BYTES] += sum(first.values())


def videos_recorded(session: Session, durations: Iterable[tuple[str, float]]) -> None:
    """Video files recorded: (site, seconds) each, added to the site's video time."""
    count = tally(session)
    for site, seconds in durations:
        count.counters[video_counter(site)] += round(seconds * 1000)


# ------------------------------------------------------------------- reading


def task_counts(session: Session, *, retrying: bool = False) -> list[tuple[str, str, str, int]]:
    """(kind, site, state, tasks) for every non-zero count; queued tasks that failed before
    are counted as queued, or apart as ``retrying`` when asked."""
    total = func.sum(TASK_COUNTS.c.n)
    rows = session.execute(
        select(TASK_COUNTS.c.kind, TASK_COUNTS.c.site, TASK_COUNTS.c.state, total)
        .group_by(TASK_COUNTS.c.kind, TASK_COUNTS.c.site, TASK_COUNTS.c.state)
        .having(total != 0)
    )
    counts: collections.Counter = collections.Counter()
    for kind, site, state, n in rows:
        counts[(kind, site, TaskState.QUEUED if state == RETRYING and not retrying else state)] += int(n)
    return [(kind, site, state, n) for (kind, site, state), n in sorted(counts.items())]


def counter_values(session: Session) -> dict[str, int]:
    rows = session.execute(select(COUNTERS.c.name, func.sum(COUNTERS.c.n)).group_by(COUNTERS.c.name))
    return {name: int(n) for name, n in rows}


def item_counts(session: Session, counters: dict[str, int] | None = None) -> dict[str, int]:
    counters = counter_values(session) if counters is None else counters
    return {state.value: counters.get(item_counter(state), 0) for state in ItemState}


def node_totals(session: Session) -> dict[int, dict[str, int]]:
    """Per node: tasks done (still done), files and bytes recorded."""
    rows = session.execute(
        select(
            NODE_COUNTS.c.client_id,
            func.sum(NODE_COUNTS.c.tasks_done),
            func.sum(NODE_COUNTS.c.files),
            func.sum(NODE_COUNTS.c.bytes),
        ).group_by(NODE_COUNTS.c.client_id)
    )
    return {client: {"tasks_done": int(d), "files": int(f), "bytes": int(b)} for client, d, f, b in rows}


def minutes_since(session: Session, since: datetime) -> list[tuple[datetime, str, int, int, int]]:
    """(minute, kind, node, done, bytes) of the minutes from ``since`` on."""
    rows = session.execute(
        select(
            MINUTE_COUNTS.c.minute,
            MINUTE_COUNTS.c.kind,
            MINUTE_COUNTS.c.client_id,
            func.sum(MINUTE_COUNTS.c.done),
            func.sum(MINUTE_COUNTS.c.bytes),
        )
        .where(MINUTE_COUNTS.c.minute >= minute_of(since))
        .group_by(MINUTE_COUNTS.c.minute, MINUTE_COUNTS.c.kind, MINUTE_COUNTS.c.client_id)
    )
    return [(minute, kind, client, int(done), int(size)) for minute, kind, client, done, size in rows]


# ------------------------------------------------------------------ recounting


def rebuild(session: Session, now: datetime) -> None:
    """Count everything again from the tables, in one transaction (writers wait on
    PostgreSQL: the tables are locked against changes while they are counted)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("LOCK TABLE tasks, items, files IN SHARE MODE"))
    for table in KEPT_TABLES:
        connection.execute(delete(table))
    recount_into(connection, now)
    session.commit()


def recount_into(connection: Connection, now: datetime | None = None, *, videos: bool = True) -> None:
    """Fill the (empty) kept tables from counts of the tables, as shard 0 (``videos``:
    False for a schema before the files' probe columns, migration 0009)."""
    now = now or datetime.now(UTC)
    recount = recounted(connection, now, videos=videos)
    for table in KEPT_TABLES:
        columns = _columns(table)
        rows = [tuple(row[name] for name in columns) for row in recount[PART_OF[table.name]]]
        _add(connection, table, rows, recount=True)


def recounted(connection: Connection, now: datetime, *, videos: bool = True) -> dict[str, list[dict[str, Any]]]:
    """What the kept tables should hold, counted from the tables (one GROUP BY each)."""
    state = case(((TASKS.c.state == TaskState.QUEUED) & (TASKS.c.attempts > 0), RETRYING), else_=TASKS.c.state).label(
        "shown"
    )
    tasks = [
        {"kind": kind, "site": site, "state": shown_state, "n": n}
        for kind, site, shown_state, n in connection.execute(
            select(TASKS.c.kind, TASKS.c.site, state, func.count()).group_by(TASKS.c.kind, TASKS.c.site, state)
        )
    ]
    nodes: dict[int, dict[str, Any]] = {}
    done_by = select(TASKS.c.done_by, func.count()).where(TASKS.c.state == TaskState.DONE, TASKS.c.done_by.is_not(None))
    for client, n in connection.execute(done_by.group_by(TASKS.c.done_by)):
        nodes[client] = {"client_id": client, "tasks_done": n, "files": 0, "bytes": 0}
    per_node = select(FILES.c.client_id, func.count(), func.sum(FILES.c.size)).group_by(FILES.c.client_id)
    for client, files, size in connection.execute(per_node):
        entry = nodes.setdefault(client, {"client_id": client, "tasks_done": 0, "files": 0, "bytes": 0})
        entry.update(files=files, bytes=int(size or 0))

    since = minute_of(now - MINUTES_KEPT)
    minutes: dict[tuple, dict[str, Any]] = {}
    minute = _minute_expression(connection, TASKS.c.done_at)
    done = (
        select(minute, TASKS.c.kind, TASKS.c.done_by, func.count())
        .where(TASKS.c.done_at >= since, TASKS.c.done_by.is_not(None))
        .group_by(minute, TASKS.c.kind, TASKS.c.done_by)
    )
    for at, kind, client, n in connection.execute(done):
        at = _as_minute(at)
        minutes[(at, kind, client)] = {"minute": at, "kind": kind, "client_id": client, "done": n, "bytes": 0}
    minute = _minute_expression(connection, FILES.c.created_at)
    recorded = (
        select(minute, FILES.c.client_id, func.sum(FILES.c.size))
        .where(FILES.c.created_at >= since)
        .group_by(minute, FILES.c.client_id)
    )
    for at, client, size in connection.execute(recorded):
        at = _as_minute(at)
        key = (at, TaskKind.DOWNLOAD.value, client)
        entry = minutes.setdefault(
            key, {"minute": at, "kind": TaskKind.DOWNLOAD.value, "client_id": client, "done": 0, "bytes": 0}
        )
        entry["bytes"] = int(size or 0)

    counters = {
        item_counter(state): n
        for state, n in connection.execute(select(ITEMS.c.state, func.count()).group_by(ITEMS.c.state))
    }
    firsts = select(func.min(FILES.c.id)).group_by(FILES.c.sha256).scalar_subquery()
    unique_files, unique_bytes = connection.execute(
        select(func.count(), func.coalesce(func.sum(FILES.c.size), 0)).where(FILES.c.id.in_(firsts))
    ).one()
    counters[UNIQUE_FILES], counters[UNIQUE_BYTES] = unique_files, int(unique_bytes)
    counters[KNOWN_SKIPPED] = int(
        connection.scalar(
            select(func.coalesce(func.sum(TASKS.c.known_count), 0)).where(TASKS.c.kind == TaskKind.METADATA)
        )
    )
    counters[GONE_UPSTREAM] = connection.scalar(select(func.count()).where(TASKS.c.gone_at.is_not(None)))
    if videos:
        per_site = (
            select(TASKS.c.site, func.sum(func.round(FILES.c.duration * 1000)))
            .join(TASKS, TASKS.c.id == FILES.c.task_id)
            .where(FILES.c.duration > 0)
            .group_by(TASKS.c.site)
        )
        for site, milliseconds in connection.execute(per_site):
            counters[video_counter(site)] = int(milliseconds or 0)
    anchors = KnownFile.__table__
    named = connection.execute(select(*(func.count(anchors.c[name]) for name in KNOWN_COLUMNS))).one()
    counters.update({known_counter(name): n for name, n in zip(KNOWN_COLUMNS, named, strict=True)})
    return {
        "tasks": sorted(tasks, key=lambda row: (row["kind"], row["site"], row["state"])),
        "nodes": [nodes[client] for client in sorted(nodes)],
        "minutes": [minutes[key] for key in sorted(minutes)],
        "counters": [{"name": name, "n": n} for name, n in sorted(counters.items()) if n],
    }


def differences(session: Session, now: datetime | None = None) -> list[str]:
    """Where the kept counts differ from a recount (tasks, nodes, counters; the per-minute
    history is left out: a task done twice in a day is two completions there, one row here)."""
    now = now or datetime.now(UTC)
    read_only(session)
    have, want = kept(session), recounted(session.connection(), now)
    lines = []
    for part in ("tasks", "nodes", "counters"):
        extra = [row for row in have[part] if row not in want[part]]
        missing = [row for row in want[part] if row not in have[part]]
        lines += [f"{part}: kept {row}" for row in extra] + [f"{part}: counted {row}" for row in missing]
    return lines


def _minute_expression(connection: Connection, column):
    if connection.dialect.name == "postgresql":
        return func.date_trunc("minute", column)
    # SQLite stores the timestamps as text: 'YYYY-MM-DD HH:MM:SS.ffffff'
    return func.substr(column, 1, 16)


def _as_minute(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return value.astimezone(UTC)


def kept(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The kept tables as ``recounted`` shapes them (shards added up, zeros left out):
    what a test compares with a recount."""
    tasks = [{"kind": k, "site": s, "state": st, "n": n} for k, s, st, n in task_counts(session, retrying=True)]
    nodes = [
        {"client_id": client} | values
        for client, values in sorted(node_totals(session).items())
        if any(values.values())
    ]
    minutes = [
        {"minute": minute, "kind": kind, "client_id": client, "done": done, "bytes": size}
        for minute, kind, client, done, size in sorted(minutes_since(session, EPOCH))
        if done or size
    ]
    return {
        "tasks": sorted(tasks, key=lambda row: (row["kind"], row["site"], row["state"])),
        "nodes": nodes,
        "minutes": minutes,
        "counters": [{"name": name, "n": n} for name, n in sorted(counter_values(session).items()) if n],
    }
