"""Moving the whole archive to another database (``flask --app server move-to URL``): an
installation that started on the embedded SQLite and now needs several coordinators
moves to PostgreSQL without losing a row.

Every table is copied in primary-key order, in chunks, each chunk committed in the
target together with how far its table has come (``move_progress``): an interrupted move
run again goes on from there. Ids are kept, and the target's sequences are set past
them. A target that already holds data is refused unless it is this very move being
resumed, or ``replace`` empties it first. At the end both databases are read again, table
by table, and the row counts and a checksum of every row are compared.

Stop the coordinators first: a row written to the source during the move would be
missing from the target (the comparison at the end would say so).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine, func, select, text, tuple_
from sqlalchemy.engine import Connection, Engine

from .errors import InvalidInput
from .extensions import db

CHUNK_ROWS = 10_000

#: In the target: how far each table has been copied, and from which source.
PROGRESS = Table(
    "move_progress",
    MetaData(),
    Column("table_name", String(100), primary_key=True),
    Column("source", String(500), nullable=False),
    Column("copied", Integer, nullable=False),
    Column("last_key", String(2000)),
    Column("done", Integer, nullable=False),
)


@dataclass
class TableCheck:
    name: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def equal(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


def tables() -> list[Table]:
    """Every table of the schema, parents before children."""
    return list(db.metadata.sorted_tables)


def move(
    source: Engine,
    target_url: str,
    *,
    replace: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[TableCheck]:
    """Copy every table of ``source`` into the (migrated) database at ``target_url``;
    returns the comparison of each table. ``progress(table, rows_done, rows_total)``."""
    target = create_engine(target_url)
    try:
        label = source.url.render_as_string(hide_password=True)
        if target.url.render_as_string(hide_password=True) == label:
            raise InvalidInput.at(["target"], "is the database the coordinator uses now")
        with target.begin() as connection:
            PROGRESS.create(connection, checkfirst=True)
            resuming = _check_target(connection, label, replace)
        for table in tables():
            _copy_table(source, target, table, label, chunk_rows, progress, resuming)
        with target.begin() as connection:
            _set_sequences(connection)
        return compare(source, target)
    finally:
        target.dispose()


def _check_target(connection: Connection, source: str, replace: bool) -> bool:
    """True when this move is being resumed; refuses a target holding other data."""
    started = connection.execute(select(PROGRESS.c.source).limit(1)).scalar()
    holding = [table.name for table in tables() if connection.execute(select(func.count()).select_from(table)).scalar()]
    if replace:
        for table in reversed(tables()):
            connection.execute(table.delete())
        connection.execute(PROGRESS.delete())
        return False
    if started is not None:
        if started != source:
            raise InvalidInput.at(
                ["target"], f"holds a move from another database ({started}); --replace to start over"
            )
        return True
    if holding:
        raise InvalidInput.at(
            ["target"], f"is not empty (tables {', '.join(holding[:5])} hold rows); --replace to empty it first"
        )
    return False


def _copy_table(
    source: Engine,
    target: Engine,
    table: Table,
    label: str,
    chunk_rows: int,
    progress: Callable[[str, int, int], None] | None,
    resuming: bool,
) -> None:
    key = list(table.primary_key.columns)
    with target.begin() as connection:
        state = connection.execute(select(PROGRESS).where(PROGRESS.c.table_name == table.name)).one_or_none()
        if state is None:
            if resuming:  # rows of an interrupted chunk were rolled back with it; none are here
                connection.execute(table.delete())
            connection.execute(
                PROGRESS.insert().values(table_name=table.name, source=label, copied=0, last_key=None, done=0)
            )
            copied, last = 0, None
        else:
            copied, last = state.copied, json.loads(state.last_key) if state.last_key else None
            if state.done:
                return
    with source.connect() as reader:
        total = reader.execute(select(func.count()).select_from(table)).scalar()
    if progress:
        progress(table.name, copied, total)
    while True:
        query = select(table).order_by(*key).limit(chunk_rows)
        if last is not None:
            query = query.where(
                tuple_(*key) > tuple_(*(_key_value(column, value) for column, value in zip(key, last, strict=True)))
            )
        with source.connect() as reader:
            rows = reader.execute(query).all()
        with target.begin() as connection:
            if rows:
                _load(connection, table, rows)
                last = [_json_key(rows[-1]._mapping[column.name]) for column in key]
                copied += len(rows)
            finished = len(rows) < chunk_rows
            connection.execute(
                PROGRESS.update()
                .where(PROGRESS.c.table_name == table.name)
                .values(copied=copied, last_key=json.dumps(last) if last is not None else None, done=int(finished))
            )
        if progress:
            progress(table.name, copied, total)
        if finished:
            return


def _json_key(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _key_value(column: Column, value: Any) -> Any:
    if isinstance(value, str) and column.type.python_type is datetime:
        return datetime.fromisoformat(value)
    return value


def _load(connection: Connection, table: Table, rows: list[Any]) -> None:
    """One chunk into the target: COPY on PostgreSQL, an executemany elsewhere."""
    columns = [column.name for column in table.columns]
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), [dict(row._mapping) for row in rows])
        return
    json_columns = {column.name for column in table.columns if isinstance(column.type, JSON)}
    cursor = connection.connection.driver_connection.cursor()
    quote = connection.dialect.identifier_preparer.quote  # a column may be a keyword ("full")
    with cursor.copy(f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN") as copy:
        for row in rows:
            mapping = row._mapping
            copy.write_row([json.dumps(mapping[name]) if name in json_columns else mapping[name] for name in columns])


def _set_sequences(connection: Connection) -> None:
    """The target's id sequences start past the ids copied (PostgreSQL)."""
    if connection.dialect.name != "postgresql":
        return
    for table in tables():
        key = list(table.primary_key.columns)
        if len(key) != 1 or not isinstance(key[0].type, Integer) or not key[0].autoincrement:
            continue
        sequence = connection.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table.name, "column": key[0].name}
        ).scalar()
        if sequence is None:
            continue
        highest = connection.execute(select(func.max(key[0]))).scalar()
        if highest is None:
            connection.execute(text("SELECT setval(CAST(:sequence AS regclass), 1, false)"), {"sequence": sequence})
        else:
            connection.execute(
                text("SELECT setval(CAST(:sequence AS regclass), :value)"), {"sequence": sequence, "value": highest}
            )


# ------------------------------------------------------------------ comparing


def compare(source: Engine, target: Engine) -> list[TableCheck]:
    """Row counts and a checksum of every row, in primary-key order, per table."""
    checks = []
    for table in tables():
        source_rows, source_sum = _checksum(source, table)
        target_rows, target_sum = _checksum(target, table)
        checks.append(TableCheck(table.name, source_rows, target_rows, source_sum, target_sum))
    return checks


def _checksum(engine: Engine, table: Table) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in _rows(engine, table):
        digest.update(_canonical(row))
        count += 1
    return count, digest.hexdigest()[:16]


def _rows(engine: Engine, table: Table) -> Iterator[Any]:
    key = list(table.primary_key.columns)
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
            select(table).order_by(*key)
        )
        yield from result


def _canonical(row: Any) -> bytes:
    """A row as the same bytes from either database (times in UTC, JSON with sorted keys)."""
    parts = []
    for value in row:
        if value is None:
            parts.append("\\N")
        elif isinstance(value, datetime):
            parts.append(value.isoformat())
        elif isinstance(value, bool):
            parts.append("t" if value else "f")
        elif isinstance(value, dict | list):
            parts.append(json.dumps(value, sort_keys=True))
        else:
            parts.append(str(value))
    return ("\x1f".join(parts) + "\x1e").encode()


def migrate_target(target_url: str) -> None:
    """Create or upgrade the target's schema (as ``init-db`` would there)."""
    from . import create_app
    from .cli import init_db

    app = create_app({"DATABASE_URL": target_url})
    with app.app_context():
        init_db()
        db.session.remove()
        db.engine.dispose()


def check_source_is_current(source: Engine) -> None:
    """The source must have the newest schema, as the target will (``init-db`` first)."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from . import MIGRATIONS_DIR

    with source.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory(MIGRATIONS_DIR).get_current_head()
    if current != head:
        raise InvalidInput.at(
            ["source"], f"is at schema revision {current}, not {head}: run init_db on it first", location="cli"
        )
