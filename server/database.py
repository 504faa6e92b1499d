"""Database plumbing that differs between SQLite and PostgreSQL, kept out of the domain code."""

from __future__ import annotations

import fcntl
import functools
import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Table, bindparam, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session
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
    """WAL, and write transactions that take the write lock at BEGIN, handed over fast.

    A deferred transaction that reads first and writes later can fail with SQLITE_BUSY
    when another process wrote in between; ``BEGIN IMMEDIATE`` waits for the lock
    instead, which is what makes one lease one atomic step on SQLite. Read-only work
    (stats, reports) asks for ``read_only(session)`` and does not block writers.

    Writers of all processes (gunicorn workers) first queue on an ``flock`` of a file
    beside the database: the kernel wakes the next one as soon as the lock is free,
    where SQLite's own busy handler would sleep 1, 2, 5, 10... ms between tries. With
    four workers that sleeping, not work, was what limited throughput.
    """
    if engine.dialect.name != "sqlite":
        return
    database = engine.url.database
    lock_path = f"{database}.writer-lock" if database and database != ":memory:" else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()
        if lock_path is not None:
            record.info["writer_lock"] = WriterLock(lock_path)

    @event.listens_for(engine, "close")
    def _on_close(dbapi_connection, record):
        lock = record.info.pop("writer_lock", None)
        if lock is not None:
            lock.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        lock = connection.connection._connection_record.info.get("writer_lock") if mode == "IMMEDIATE" else None
        if lock is not None:
            lock.acquire()
        try:
            connection.exec_driver_sql(f"BEGIN {mode}")
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def _release(connection):
        lock = connection.connection._connection_record.info.get("writer_lock")
        if lock is not None:
            lock.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)


class WriterLock:
    """An exclusive ``flock`` on one file, shared by every process writing the database."""

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        os.close(self._fd)


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


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert a batch, skipping rows that conflict with a unique index, as one statement.

    PostgreSQL runs an ``executemany`` as one statement per row (4.8 ms per 100 file
    records here); ``INSERT ... SELECT FROM unnest(arrays)`` is one statement whatever
    the batch size. SQLite, in-process, is fastest with its own ``executemany``.
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_unnest_insert(table, tuple(rows[0])), _as_arrays(rows))
    else:
        session.connection().execute(dialect_insert(session, table).on_conflict_do_nothing(), rows)


def _as_arrays(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {f"a_{name}": [row[name] for row in rows] for name in rows[0]}


@functools.cache
def _unnest_insert(table: Table, columns: tuple[str, ...]):
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    arrays = [bindparam(f"a_{name}", type_=ARRAY(table.c[name].type)) for name in columns]
    unnested = func.unnest(*arrays).table_valued(*columns).render_derived()
    return (
        pg_insert(table)
        .from_select(list(columns), select(*[unnested.c[name] for name in columns]))
        .on_conflict_do_nothing()
    )


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
