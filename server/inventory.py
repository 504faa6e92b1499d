"""Inventory import: CSV rows of wanted items become items and their metadata tasks.

Streamed in chunks of ``IMPORT_CHUNK_ROWS`` rows, one transaction each, so a file of
millions of rows needs flat memory and never holds the database for long. A row is
either imported whole or rejected with its line number and reason; re-importing the
same file changes nothing; a changed row updates its item (and resets the metadata
tasks whose target changed).
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState

from .counts import TaskChange, item_counter, tally, update_counted
from .database import utcnow
from .errors import InvalidInput
from .item_state import refresh_item_states
from .models import Item, Task
from .schedule import parse_interval
from .sites import SiteRegistry
from .transitions import fresh_start, new_metadata_task

ITEMS, TASKS = Item.__table__, Task.__table__
RESERVED_COLUMNS = ("key", "url", "query", "title", "sites", "priority", "check_every")
MAX_REPORTED_ERRORS = 1000
MAX_KEY = 500
MAX_TEXT = 4000
PRIORITY_RANGE = (-1_000_000, 1_000_000)
_SITE_SEPARATORS = re.compile(r"[\s,;|]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str
    key: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    import_id: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    #: Set when the file itself could not be read to the end (e.g. not UTF-8).
    aborted: str | None = None

    @property
    def errors_truncated(self) -> bool:
        return self.rejected > len(self.errors)

    def summary(self) -> str:
        return f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, rejected {self.rejected}"


class RowRejected(Exception):
    pass


@dataclass
class _Row:
    line: int
    key: str
    url: str | None
    query: str | None
    title: str | None
    sites: list[str] | None
    priority: int
    check_every: int | None
    extra: dict[str, str]
    targets: dict[str, str]  # site name -> URL the metadata task resolves
    content_hash: str


def import_inventory(
    session: Session,
    stream: IO,
    *,
    sites: SiteRegistry,
    chunk_rows: int = 1000,
    on_error: Callable[[RowError], None] | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Import CSV from a binary stream (or a text one opened with ``newline=''``).

    Header problems raise InvalidInput before anything is written.
    """
    report = ImportReport(import_id=str(uuid.uuid4()))
    lines = _RowLines(stream)
    header = _read_header(lines)
    extra_columns = [name for name in header if name not in RESERVED_COLUMNS]

    def reject(error: RowError) -> None:
        report.rejected += 1
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.errors.append(error)
        if on_error is not None:
            on_error(error)

    chunk: list[_Row] = []
    reader = _reader(lines)
    while True:
        lines.start_row()
        try:
            values = next(reader)
        except StopIteration:
            break
        except (csv.Error, BrokenRow) as exc:
            # The row is rejected at its first line; whatever it swallowed after that
            # (an unterminated quote runs to the end of the file) is read again as rows.
            reject(RowError(lines.row_start, f"malformed CSV: {exc}"))
            lines.replay_after_first()
            reader = _reader(lines)
            continue
        except UploadEnded as exc:
            report.aborted = str(exc)
            break
        if not any(value.strip() for value in values):
            continue  # blank line
        try:
            chunk.append(_parse_row(values, header, extra_columns, lines.row_start, sites))
        except RowRejected as exc:
            reject(RowError(lines.row_start, str(exc)))
            continue
        if len(chunk) >= chunk_rows:
            _store_chunk(session, chunk, report, reject, now or utcnow())
            chunk = []
    if chunk:
        _store_chunk(session, chunk, report, reject, now or utcnow())
    return report


#: Longer than any row this import accepts: past it, a quote was surely never closed.
MAX_ROW_CHARACTERS = 1 << 20


class BrokenRow(Exception):
    """A row that cannot be read (not UTF-8, or runaway): rejected at its first line."""


class UploadEnded(Exception):
    """The stream itself failed (a dropped upload): nothing after this point can be read."""


def _reader(lines: _RowLines):
    # strict: a quote left open at the end of the file is an error, not one giant field.
    return csv.reader(lines, strict=True)


class _RowLines:
    """Feeds the csv reader line by line and remembers the lines of the row being read, so
    a broken row is reported at its first line and what it swallowed is read again.

    Binary lines are decoded one at a time: a bad byte rejects its row, and every other
    row is still imported.
    """

    def __init__(self, stream: IO):
        self._stream = iter(stream)
        self._count = 0
        self._replay: collections.deque[tuple[int, str | bytes]] = collections.deque()
        self._row: list[tuple[int, str | bytes]] = []
        self._row_characters = 0

    @property
    def row_start(self) -> int:
        """The line the current row began on."""
        return self._row[0][0] if self._row else self._count + 1

    def start_row(self) -> None:
        self._row = []
        self._row_characters = 0

    def replay_after_first(self) -> None:
        self._replay.extendleft(reversed(self._row[1:]))
        self._row = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._replay:
            number, line = self._replay.popleft()
        else:
            try:
                line = next(self._stream)
            except StopIteration:
                raise
            except (OSError, ValueError) as exc:  # e.g. the client hung up mid-upload
                raise UploadEnded(f"the file ended early after line {self._count}: {exc}") from None
            self._count += 1
            number = self._count
        self._row.append((number, line))
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BrokenRow(
                    f"line {number} is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1}); "
                    "save the file as UTF-8"
                ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        self._row_characters += len(line)
        if self._row_characters > MAX_ROW_CHARACTERS:
            raise BrokenRow(f"the row is longer than {MAX_ROW_CHARACTERS} characters (a quote never closed?)")
        return line


def _read_header(lines: _RowLines) -> list[str]:
    reader = _reader(lines)
    try:
        for values in reader:
            if any(value.strip() for value in values):
                break
            lines.start_row()
        else:
            raise InvalidInput.at(["header"], "the file is empty: expected a header row", location="csv")
    except (csv.Error, BrokenRow, UploadEnded) as exc:
        raise InvalidInput.at(["header"], f"cannot read the header row: {exc}", location="csv") from None
    header = [value.strip().lower() for value in values]
    if "" in header:
        position = header.index("") + 1
        raise InvalidInput.at(["header"], f"column {position} has no name", location="csv")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise InvalidInput.at(["header"], f"duplicate column(s): {', '.join(duplicates)}", location="csv")
    if "url" not in header and "query" not in header:
        raise InvalidInput.at(
            ["header"], f"needs a 'url' or a 'query' column; found: {', '.join(header)}", location="csv"
        )
    return header


def _parse_row(values: list[str], header: list[str], extra_columns: list[str], line: int, sites: SiteRegistry) -> _Row:
    if len(values) > len(header):
        raise RowRejected(f"has {len(values)} fields but the header has {len(header)}")
    if any("\x00" in value for value in values):
        raise RowRejected("contains a NUL character, which no database stores")
    fields = {name: (values[i].strip() if i < len(values) else "") for i, name in enumerate(header)}
    url = fields.get("url") or None
    query = fields.get("query") or None
    if url and query:
        raise RowRejected("give a url or a query, not both")
    if not url and not query:
        raise RowRejected("needs a url or a query")
    if url is not None:
        if len(url) > MAX_TEXT:
            raise RowRejected(f"url is longer than {MAX_TEXT} characters")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RowRejected(f"url must be an http(s) URL, got {url!r}")
    if query is not None:
        query = _SPACES.sub(" ", query)
        if len(query) > MAX_TEXT:
            raise RowRejected(f"query is longer than {MAX_TEXT} characters")
    key = fields.get("key") or (url if url is not None else f"query:{query}")
    if len(key) > MAX_KEY:
        raise RowRejected(f"key is longer than {MAX_KEY} characters; give a shorter 'key' column")
    title = fields.get("title") or None
    if title is not None and len(title) > MAX_TEXT:
        raise RowRejected(f"title is longer than {MAX_TEXT} characters")

    restriction = None
    if fields.get("sites"):
        restriction = list(dict.fromkeys(name for name in _SITE_SEPARATORS.split(fields["sites"]) if name))
        unknown = [name for name in restriction if name not in sites]
        if unknown:
            raise RowRejected(f"unknown site(s) {', '.join(unknown)}; known: {', '.join(sites.names()) or 'none'}")

    priority = 0
    if fields.get("priority"):
        try:
            priority = int(fields["priority"])
        except ValueError:
            raise RowRejected(f"priority must be an integer, got {fields['priority']!r}") from None
        if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
            raise RowRejected(f"priority must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}")

    try:
        check_every = parse_interval(fields.get("check_every"))
    except ValueError as problem:
        raise RowRejected(f"check_every {problem}") from None

    targets = _targets(url, query, restriction, sites)
    extra = {name: fields[name] for name in extra_columns if fields.get(name)}
    identity = [url, query, title, restriction, priority, extra]
    if check_every is not None:  # rows without it hash as before: re-importing old files changes nothing
        identity.append(check_every)
    content = json.dumps(identity, sort_keys=True, ensure_ascii=False)
    return _Row(
        line,
        key,
        url,
        query,
        title,
        restriction,
        priority,
        check_every,
        extra,
        targets,
        hashlib.sha256(content.encode("utf-8")).hexdigest(),
    )


def _targets(url: str | None, query: str | None, restriction: list[str] | None, sites: SiteRegistry) -> dict[str, str]:
    """Which sites resolve the item, and at which concrete URL."""
    if url is not None:
        site = sites.for_url(url)
        if site is None:
            raise RowRejected("no configured site matches this url")
        if restriction is not None and site.name not in restriction:
            raise RowRejected(f"url belongs to site {site.name!r}, which is not in its sites column")
        return {site.name: url}
    if restriction is not None:
        cannot = [name for name in restriction if sites.get(name).search_url is None]
        if cannot:
            raise RowRejected(f"site(s) {', '.join(cannot)} cannot search for a query (no search_url)")
        chosen = [sites.get(name) for name in restriction]
    else:
        chosen = [site for site in sites if site.search_url is not None]
        if not chosen:
            raise RowRejected("no configured site can search for a query (none has a search_url)")
    return {site.name: site.search_url_for(query) for site in chosen}


def _store_chunk(session: Session, rows: list[_Row], report: ImportReport, reject, now: datetime) -> None:
    existing = {
        row.key: row
        for row in session.execute(
            select(Item.id, Item.key, Item.content_hash, Item.import_id, Item.import_line).where(
                Item.key.in_({row.key for row in rows})
            )
        )
    }
    seen_here: dict[str, _Row] = {}
    new_rows: list[_Row] = []
    touched: list[dict[str, Any]] = []
    changed: list[tuple[int, _Row]] = []
    for row in rows:
        earlier = seen_here.get(row.key)
        stored = existing.get(row.key)
        earlier_line = earlier.line if earlier is not None else None
        earlier_hash = earlier.content_hash if earlier is not None else None
        if earlier is None and stored is not None and stored.import_id == report.import_id:
            earlier_line, earlier_hash = stored.import_line, stored.content_hash
        if earlier_line is not None:
            if earlier_hash == row.content_hash:
                report.unchanged += 1  # the same row twice in one file is harmless
            else:
                reject(
                    RowError(
                        row.line, f"key {row.key!r} already used on line {earlier_line} with other values", row.key
                    )
                )
            continue
        seen_here[row.key] = row
        if stored is None:
            new_rows.append(row)
        elif stored.content_hash == row.content_hash:
            report.unchanged += 1
            touched.append({"id": stored.id, "import_id": report.import_id, "import_line": row.line})
        else:
            changed.append((stored.id, row))

    if new_rows:
        ids = dict(
            session.execute(
                Item.__table__.insert().returning(Item.key, Item.id),
                [_item_values(row, report.import_id, now) | {"created_at": now} for row in new_rows],
            ).all()
        )
        tasks = [
            new_metadata_task(ids[row.key], site, url, row.priority, now, check_every=row.check_every)
            for row in new_rows
            for site, url in row.targets.items()
        ]
        session.execute(Task.__table__.insert(), tasks)
        count = tally(session)
        count.counters[item_counter(ItemState.PENDING)] += len(new_rows)
        for (site, state), n in collections.Counter((task["site"], task["state"]) for task in tasks).items():
            count.task_moved(TaskKind.METADATA, site, None, state, n)
        report.added += len(new_rows)
    if touched:
        session.execute(update(Item), touched)
    for item_id, row in changed:
        _apply_change(session, item_id, row, report.import_id, now)
    if changed:
        refresh_item_states(session, [item_id for item_id, _ in changed])
        report.updated += len(changed)
    session.commit()


def _item_values(row: _Row, import_id: str, now: datetime) -> dict[str, Any]:
    return {
        "key": row.key,
        "url": row.url,
        "query": row.query,
        "title": row.title,
        "sites": row.sites,
        "priority": row.priority,
        "check_every": row.check_every,
        "extra": row.extra,
        "content_hash": row.content_hash,
        "state": ItemState.PENDING,
        "import_id": import_id,
        "import_line": row.line,
        "updated_at": now,
    }


def _apply_change(session: Session, item_id: int, row: _Row, import_id: str, now: datetime) -> None:
    """A changed row: new values, and a fresh start for sites whose target URL changed."""
    update_counted(session, ITEMS, ITEMS.c.id == item_id, _item_values(row, import_id, now))
    count = tally(session)
    current = dict(
        session.execute(
            select(Task.site, Task.url).where(Task.item_id == item_id, Task.kind == TaskKind.METADATA)
        ).all()
    )
    dropped = [site for site in current if site not in row.targets]
    if dropped:
        # A lease still holding one of these gets a conflict for it when it reports.
        deleted = session.execute(
            delete(Task)
            .where(Task.item_id == item_id, Task.kind == TaskKind.METADATA, Task.site.in_(dropped))
            .returning(Task.kind, Task.site, Task.state, Task.done_by, Task.known_count)
        )
        count.task_rows(
            TaskChange(task.kind, task.site, task.state, None, was_by=task.done_by, was_known=task.known_count)
            for task in deleted
        )
    for site, url in row.targets.items():
        if site not in current:
            task = new_metadata_task(item_id, site, url, row.priority, now, check_every=row.check_every)
            session.execute(Task.__table__.insert(), [task])
            count.task_moved(TaskKind.METADATA, site, None, task["state"])
        elif current[site] != url:
            target = (Task.item_id == item_id) & (Task.kind == TaskKind.METADATA) & (Task.site == site)
            update_counted(session, TASKS, target, {"url": url, **fresh_start(now)})
    # A new interval applies from now: a finished check becomes a subscription due now, a
    # waiting subscription that is no longer one is done.
    metadata = (Task.item_id == item_id) & (Task.kind == TaskKind.METADATA)
    session.execute(update(Task).where(metadata).values(check_every=row.check_every, updated_at=now))
    if row.check_every is not None:
        finished = metadata & Task.state.in_([TaskState.DONE, TaskState.NOT_FOUND])
        update_counted(session, TASKS, finished, {"state": TaskState.SCHEDULED, "available_at": now, "updated_at": now})
    else:
        waiting = metadata & (Task.state == TaskState.SCHEDULED)
        update_counted(session, TASKS, waiting, {"state": TaskState.DONE, "updated_at": now})
    # The new priority applies to whatever of this item still waits in the queue.
    session.execute(
        update(Task)
        .where(Task.item_id == item_id, Task.state.in_([TaskState.QUEUED, TaskState.SCHEDULED, TaskState.PAUSED]))
        .values(priority=row.priority, updated_at=now)
    )
