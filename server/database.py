"""Database plumbing that differs between SQLite and PostgreSQL, kept out of the domain code."""

from __future__ import annotations

import fcntl
import functools
import json
import operator
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Table, Text, any_, bindparam, cast, event, func, literal_column, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python on both backends (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def engine_options(url: str) -> dict[str, Any]:
    """Engine options per backend: SQLite gets a long busy timeout instead of 'database is locked'."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60, "check_same_thread": False}}
    return {"pool_pre_ping": True}


def install_sqlite_behaviour(engine: Engine) -> None:
    """WAL, and write transactions that take the write lock at BEGIN, queued on a file lock.

    A deferred transaction that reads first and writes later can fail with SQLITE_BUSY
    when another process wrote in between; ``BEGIN IMMEDIATE`` waits for the lock
    instead, which is what makes one lease one atomic step on SQLite. Read-only work
    (stats, reports) asks for ``read_only(session)`` and does not block writers.
    Writers of a database file queue on ``WriterQueuedConnection``'s lock first.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "do_connect")
    def _queue_writers(_dialect, _record, cargs, cparams):
        database = cargs[0] if cargs else cparams.get("database", "")
        if WriterQueuedConnection.lock_path_for(str(database)) is not None:
            cparams["factory"] = WriterQueuedConnection

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        dbapi_connection = connection.connection.driver_connection
        if mode == "IMMEDIATE" and isinstance(dbapi_connection, WriterQueuedConnection):
            dbapi_connection.begin_immediate()
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")


#: Every statement planned for its tables as they are now (see install_postgresql_behaviour).
CUSTOM_PLANS = "-c plan_cache_mode=force_custom_plan"


def install_postgresql_behaviour(engine: Engine) -> None:
    """Plans made for each execution, never one generic plan kept for the connection.

    psycopg prepares a statement it has run a few times, and PostgreSQL may then keep one
    generic plan for it as long as the connection lives, made for the tables as they were.
    A coordinator starts on empty tables: the lookup of new content planned while
    ``files`` was empty went on scanning the whole table long after it had grown, until
    an ``ANALYZE`` (which a server without autovacuum never runs). A custom plan sees
    each table's current size, at the cost of planning each statement again.

    And lists (the array parameters of ``unnest`` and ``= ANY``) go in PostgreSQL's
    binary format: psycopg writes the text format element by element in Python, quoting
    each one, at several times the cost (the file records of every submit, the keys of
    every import chunk).
    """
    if engine.dialect.name != "postgresql":
        return
    from psycopg.types.array import ListBinaryDumper

    @event.listens_for(engine, "do_connect")
    def _custom_plans(_dialect, _record, _cargs, cparams):
        cparams["options"] = f"{cparams.get('options', '')} {CUSTOM_PLANS}".strip()

    @event.listens_for(engine, "connect")
    def _binary_arrays(dbapi_connection, _record):
        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


class WriterQueuedConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions first queue on an ``flock`` of
    ``<database>-writer``, held from ``BEGIN IMMEDIATE`` to commit or rollback.

    SQLite makes a waiting writer sleep and retry (1, 2, 5, 10 ... 100 ms), so with
    several gunicorn workers the writers mostly slept while the lock was free: 40% of
    both cores sat idle under load. The kernel hands a released ``flock`` to the next
    waiter at once. SQLite's own lock still guards the data; this only orders the
    writers, and the kernel drops the lock of a process that dies.
    """

    _held_here: dict[str, int] = {}  # lock path -> thread holding it in this process
    _held_guard = threading.Lock()

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        self._lock_path = self.lock_path_for(str(database))
        self._lock_fd: int | None = None
        self._holding = False

    @staticmethod
    def lock_path_for(database: str) -> str | None:
        """The lock file of an on-disk database; None for in-memory and URI databases."""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return f"{os.path.abspath(database)}-writer"

    def begin_immediate(self) -> None:
        self._acquire()
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _acquire(self) -> None:
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with self._held_guard:
                if self._held_here.get(self._lock_path) == threading.get_ident():
                    # Another connection of this very thread writes: waiting would never end.
                    raise sqlite3.OperationalError("database is locked (by this thread's other connection)") from None
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        with self._held_guard:
            self._held_here[self._lock_path] = threading.get_ident()
        self._holding = True

    def _release(self) -> None:
        if not self._holding:
            return
        self._holding = False
        with self._held_guard:
            self._held_here.pop(self._lock_path, None)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def read_only(session: Session) -> None:
    """Start the session's next transaction as a reader (SQLite: deferred, no write lock)."""
    plain = session() if isinstance(session, scoped_session) else session
    if not plain.in_transaction():
        plain.connection(execution_options={"sqlite_begin": "DEFERRED"})


def dialect_insert(session: Session, model):
    """``INSERT`` of the session's dialect, which offers ``on_conflict_do_nothing``."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def insert_ignore(session: Session, target):
    """``INSERT ... ON CONFLICT DO NOTHING`` for a model or table, in the session's dialect."""
    return dialect_insert(session, target).on_conflict_do_nothing()


@dataclass(frozen=True)
class PreparedRows:
    """Rows for ``insert_rows``, already in the driver's values on SQLite (text
    timestamps): converting them cost as much as inserting them, and done inside the
    write transaction it is time no other SQLite writer can use."""

    table: Table
    columns: tuple[str, ...]
    values: list[tuple]

    def where_in(self, column: str, allowed: set[Any]) -> PreparedRows:
        position = self.columns.index(column)
        return replace(self, values=[row for row in self.values if row[position] in allowed])


def prepare_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> PreparedRows:
    """Rows of one shape (the keys of the first) for ``insert_rows`` or ``update_rows``;
    call it before the write transaction begins."""
    columns = tuple(rows[0]) if rows else ()
    if not rows:
        return PreparedRows(table, columns, [])
    json_at = _json_positions(table, columns)
    if is_postgresql(session):
        # JSON values go to PostgreSQL as text (cast back in ``_unnested``): a list
        # inside an array parameter would be read as another dimension.
        processors = tuple(json.dumps if position in json_at else None for position in range(len(columns)))
    else:
        processors = _sqlite_processors(table, columns)
    if not any(processors):
        pick = operator.itemgetter(*columns)
        values = [pick(row) for row in rows] if len(columns) > 1 else [(pick(row),) for row in rows]
        return PreparedRows(table, columns, values)
    # Column by column: a batch repeats its timestamps and empty JSON values, each
    # converted once, and every row is built once.
    by_column = [[row[name] for row in rows] for name in columns]
    for position, process in enumerate(processors):
        if process is not None:
            by_column[position] = _converted(by_column[position], process, plain=position not in json_at)
    return PreparedRows(table, columns, list(zip(*by_column, strict=True)))


def _converted(values: list[Any], process: Callable[[Any], Any], *, plain: bool) -> list[Any]:
    """``process`` of each value; each distinct plain value (a timestamp) converted once,
    and of JSON values the ones that repeat: none, and empty ones."""
    done: dict[Any, Any] = {}
    if plain:
        return [done[value] if value in done else done.setdefault(value, process(value)) for value in values]
    out = []
    for value in values:
        if value is None or (not value and isinstance(value, (dict, list))):
            key = (type(value), "empty")
            out.append(done[key] if key in done else done.setdefault(key, process(value)))
        else:
            out.append(process(value))
    return out


def insert_rows(session: Session, rows: PreparedRows) -> int:
    """Insert a batch, skipping rows that conflict with a unique index, as one driver call;
    returns how many went in.

    PostgreSQL runs an ``executemany`` as one statement per row (4.8 ms per 100 file
    records here); ``INSERT ... SELECT FROM unnest(arrays)`` is one statement whatever
    the batch size. SQLite, in-process, is fastest with its own ``executemany``.
    """
    if not rows.values:
        return 0
    if is_postgresql(session):
        return session.connection().execute(_unnest_insert(rows.table, rows.columns), _arrays(rows)).rowcount
    placeholders = ", ".join("?" * len(rows.columns))
    return (
        session.connection()
        .exec_driver_sql(
            f"INSERT INTO {rows.table.name} ({', '.join(rows.columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
            rows.values,
        )
        .rowcount
    )


def update_rows(session: Session, rows: PreparedRows, by: str) -> None:
    """Set each row's other columns on the table's row whose ``by`` column matches, as one
    driver call: ``UPDATE ... FROM unnest(arrays)`` on PostgreSQL (an ``executemany`` is a
    statement per row there, each planned), SQLite's own ``executemany``."""
    if not rows.values:
        return
    if is_postgresql(session):
        session.connection().execute(_unnest_update(rows.table, rows.columns, by), _arrays(rows))
        return
    at = rows.columns.index(by)
    setting = [name for name in rows.columns if name != by]
    statement = f"UPDATE {rows.table.name} SET {', '.join(f'{name} = ?' for name in setting)} WHERE {by} = ?"
    session.connection().exec_driver_sql(statement, [(*row[:at], *row[at + 1 :], row[at]) for row in rows.values])


def _arrays(rows: PreparedRows) -> dict[str, list[Any]]:
    """The rows as one array parameter per column (``a_<name>``), for ``_unnested``."""
    columns = zip(*rows.values, strict=True)
    return {f"a_{name}": list(column) for name, column in zip(rows.columns, columns, strict=True)}


def copy_rows(session: Session, rows: PreparedRows) -> None:
    """Load a batch with PostgreSQL's ``COPY``, the fastest way in (bulk imports); unlike
    ``insert_rows`` a row that conflicts with a unique index fails the transaction."""
    connection = session.connection()
    quote = connection.dialect.identifier_preparer.quote
    cursor = connection.connection.driver_connection.cursor()
    statement = f"COPY {quote(rows.table.name)} ({', '.join(map(quote, rows.columns))}) FROM STDIN"
    try:
        with cursor.copy(statement) as copy:
            for row in rows.values:
                copy.write_row(row)
    except connection.dialect.dbapi.IntegrityError as error:
        # the driver's own error, raised past SQLAlchemy: made the one callers catch
        raise IntegrityError(statement, None, error) from error


@functools.cache
def _sqlite_processors(table: Table, columns: tuple[str, ...]) -> tuple:
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    return tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns)


@functools.cache
def _unnest_insert(table: Table, columns: tuple[str, ...]):
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    _, picked = _unnested(table, columns)
    # SQLAlchemy keeps an INSERT's rowcount only when asked: without it every insert reads -1.
    return (
        pg_insert(table)
        .from_select(list(columns), select(*picked))
        .on_conflict_do_nothing()
        .execution_options(preserve_rowcount=True)
    )


@functools.cache
def _unnest_update(table: Table, columns: tuple[str, ...], by: str):
    from sqlalchemy import update

    unnested, picked = _unnested(table, columns)
    values = {name: value for name, value in zip(columns, picked, strict=True) if name != by}
    return update(table).where(table.c[by] == unnested.c[by]).values(values)


def _unnested(table: Table, columns: tuple[str, ...]):
    """``unnest`` of one array parameter per column (``a_<name>``), and its columns as the
    table's types (JSON arrives as text)."""
    from sqlalchemy.dialects.postgresql import ARRAY

    json_columns = {columns[position] for position in _json_positions(table, columns)}
    arrays = [
        bindparam(f"a_{name}", type_=ARRAY(Text() if name in json_columns else table.c[name].type)) for name in columns
    ]
    unnested = func.unnest(*arrays).table_valued(*columns).render_derived()
    picked = [cast(unnested.c[name], JSON) if name in json_columns else unnested.c[name] for name in columns]
    return unnested, picked


@functools.cache
def _json_positions(table: Table, columns: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(position for position, name in enumerate(columns) if isinstance(table.c[name].type, JSON))


def in_list(column: ColumnElement[Any], name: str, postgresql: bool) -> ColumnElement[bool]:
    """``column IN (<the list bound as name>)``. On PostgreSQL ``= ANY(:name)`` with one
    array parameter: an expanded ``IN`` renders a placeholder per id, too long a text for
    psycopg's query cache, so it was parsed again on every submit (in-process CPU per
    100-task lease + submit: 5.6 ms with it, 4.1 ms without)."""
    if postgresql:
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def sql_literal(value: str):
    """A fixed vocabulary value (a state, a kind) written into the SQL text: partial indexes
    (``WHERE state = 'queued'``) then match in PostgreSQL's generic plans too, which a
    bound parameter cannot."""
    assert value.replace("_", "").isalnum()
    return literal_column(f"'{value}'")
