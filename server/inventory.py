"""Inventory import: CSV rows of wanted items become items and their metadata tasks.

Streamed in chunks of ``IMPORT_CHUNK_ROWS`` rows, one transaction each, so a file of
millions of rows needs flat memory and never holds the database for long. A row is
either imported whole or rejected with its line number and reason; re-importing the
same file changes nothing; a changed row updates its item (and resets the metadata
tasks whose target changed).

Each item remembers a hash of the row it was last imported from (its exact values, the
header, the sites it was read against): a re-imported row with the same hash is known
unchanged without parsing it, which is most of a nightly re-import of a whole inventory.
The database compares those hashes, a chunk in one statement, so such rows are not even
fetched.
"""

from __future__ import annotations

import collections
import csv
import gc
import hashlib
import itertools
import json
import operator
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, NamedTuple

from sqlalchemy import bindparam, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.states import ItemState, TaskKind, TaskState
from common.video import CHOICE_SETTINGS, BadChoice, VideoChoice

from .counts import TaskChange, item_counter, shown, tally
from .database import (
    PreparedRows,
    copy_rows,
    insert_rows,
    is_postgresql,
    prepare_rows,
    sql_literal,
    update_rows,
    utcnow,
)
from .errors import InvalidInput
from .item_state import refresh_item_states
from .models import Item, ItemImport, Task
from .schedule import parse_interval
from .sites import SiteRegistry
from .transitions import fresh_start, new_metadata_task

ITEMS, TASKS, ITEM_IMPORTS = Item.__table__, Task.__table__, ItemImport.__table__
RESERVED_COLUMNS = ("key", "url", "query", "title", "sites", "priority", "check_every")
MAX_REPORTED_ERRORS = 1000
MAX_KEY = 500
MAX_TEXT = 4000
PRIORITY_RANGE = (-1_000_000, 1_000_000)
#: ``json.dumps(identity, sort_keys=True, ensure_ascii=False)`` without its per-call set-up:
#: the same text, so content hashes of earlier imports still match.
_IDENTITY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
_SITE_SEPARATORS = re.compile(r"[\s,;|]+")
_SPACES = re.compile(r"\s+")
#: A URL ``urlsplit`` has nothing to say about (lowercase http(s), a plain host, no spaces
#: or control characters): most rows, checked without it.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][^\x00-\x20\x7f]*)?")
_CHOICE_SETTINGS = frozenset(CHOICE_SETTINGS)


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
    row_hash: str


@dataclass(slots=True)
class _Pending:
    """A row as read, before it is parsed: most rows of a re-imported file are the very
    same text as when their item was stored, and need no parsing to say so."""

    line: int
    values: list[str] | None
    #: The key the row names (None: it names none, and will be rejected when parsed).
    key: str | None = None
    row_hash: str = ""
    #: Rejected before parsing (malformed CSV).
    error: str | None = None


class _Reading:
    """What parsing a row depends on besides its values: the header, the sites (a row is
    checked against their URL patterns and search URLs) and the rules of this module."""

    #: Changed whenever what a row parses into changes: every row is then parsed again once.
    RULES = "1"

    def __init__(self, header: list[str], sites: SiteRegistry):
        self.header = header
        self.extra_columns = [name for name in header if name not in RESERVED_COLUMNS]
        self.sites = sites
        #: where the columns a key comes from are (-1: not in this file)
        self._key_at, self._url_at, self._query_at = (
            header.index(name) if name in header else -1 for name in ("key", "url", "query")
        )
        described = [(site.name, site.search_url, [pattern.pattern for pattern in site.url_patterns]) for site in sites]
        self._salted = hashlib.sha256(json.dumps([self.RULES, header, described]).encode("utf-8"))

    def pending(self, values: list[str], line: int) -> _Pending:
        """The row's key and a hash of its exact values in this setting (a row with a NUL
        character, which no stored row has, gets none)."""
        joined = "\x00".join(values)
        if joined.count("\x00") != len(values) - 1:
            return _Pending(line, values)
        digest = self._salted.copy()
        digest.update(joined.encode("utf-8"))
        return _Pending(line, values, self._key(values), digest.hexdigest())

    def pending_rows(self, rows: list[list[str]], first_line: int) -> list[_Pending]:
        """``pending`` of rows on consecutive lines, blank ones left out."""
        pending = self.pending
        return [pending(values, line) for line, values in enumerate(rows, first_line) if "".join(values).strip()]

    def _key(self, values: list[str]) -> str | None:
        """The row's key: its ``key`` column, else its URL, else ``query:`` and its query
        (spaces made one); ``_parse_row`` keeps it for the rows it accepts."""
        count = len(values)
        if 0 <= self._key_at < count and (key := values[self._key_at].strip()):
            return key
        if 0 <= self._url_at < count and (url := values[self._url_at].strip()):
            return url
        if 0 <= self._query_at < count and (query := values[self._query_at].strip()):
            return f"query:{_SPACES.sub(' ', query)}"
        return None


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
    reading = _Reading(_read_header(lines), sites)

    def reject(error: RowError) -> None:
        report.rejected += 1
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.errors.append(error)
        if on_error is not None:
            on_error(error)

    with _GarbageOfOneChunk() as garbage:
        for chunk in _chunks(lines, reading, chunk_rows, report):
            _store_chunk(session, chunk, reading, report, reject, now or utcnow())
            chunk.clear()  # its rows freed now, not kept alive through the collection below
            garbage.chunk_done()
    if report.added >= ANALYZE_AFTER_ADDED and is_postgresql(session):
        _refresh_statistics(session)
    return report


class _GarbageOfOneChunk:
    """Python's cyclic garbage collector off during an import, and run on the young
    objects after each chunk instead. A chunk makes many objects and hardly any cycles
    (reference counting frees them), yet the automatic collections it set off kept
    walking every object of the process: a third of an import's time, measured. The
    collector is switched back on at the end if it was on."""

    def __enter__(self) -> _GarbageOfOneChunk:
        self._was_enabled = gc.isenabled()
        gc.disable()
        return self

    def chunk_done(self) -> None:
        gc.collect(1)

    def __exit__(self, *exc_info: object) -> None:
        if self._was_enabled:
            gc.enable()


def _chunks(lines: _RowLines, reading: _Reading, chunk_rows: int, report: ImportReport) -> Iterator[list[_Pending]]:
    """The file's rows as read, not yet judged, ``chunk_rows`` at a time. A block of
    lines that are each one whole row is read at once; anything else row by row. A
    stream that fails ends them, ``report.aborted`` saying where."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    chunk: list[_Pending] = []
    reader = _reader(lines)
    while True:
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
        plain = lines.plain_rows(min(chunk_rows - len(chunk), PLAIN_BLOCK_LINES))
        if plain is not None:
            first_line, rows = plain
            if not rows:
                break  # the end of the file
            chunk += reading.pending_rows(rows, first_line)
            continue
        lines.start_row()
        try:
            values = next(reader)
        except StopIteration:
            break
        except (csv.Error, BrokenRow) as exc:
            # The row is rejected at its first line; whatever it swallowed after that
            # (an unterminated quote runs to the end of the file) is read again as rows.
            chunk.append(_Pending(lines.row_start, None, error=f"malformed CSV: {exc}"))
            lines.replay_after_first()
            reader = _reader(lines)
            continue
        except UploadEnded as exc:
            report.aborted = str(exc)
            break
        if "".join(values).strip():  # else a blank line
            chunk.append(reading.pending(values, lines.row_start))
    if chunk:
        yield chunk


#: Rows added by one import past which PostgreSQL is asked to look at the tables again.
ANALYZE_AFTER_ADDED = 10_000


def _refresh_statistics(session: Session) -> None:
    """PostgreSQL plans from statistics its autovacuum gathers a while after a table grew:
    right after a big import it still takes the tables for small ones, scanning every
    metadata task where an index would find a few (a re-import of a changed file ran 25
    times slower), and the lease queries plan on the same figures."""
    session.execute(text("ANALYZE items, tasks, item_imports"))
    session.commit()


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

    def plain_rows(self, most: int) -> tuple[int, list[list[str]]] | None:
        """The next lines (at most ``most``) read as rows at once, with the first one's
        number, when each line is one whole row, valid UTF-8 and not too long: most
        files, most of the way, read without a Python call per line. Otherwise None, and
        the lines wait to be read row by row (with what a broken row needs). Ask only
        between rows; an empty list is the end of the file."""
        if self._replay or isinstance(self._stream, _FailedStream):
            return None
        first = self._count + 1
        block: list[str | bytes] = []
        try:
            block.extend(itertools.islice(self._stream, most))
        except (OSError, ValueError) as exc:  # read row by row up to here, then reported
            self._stream = _FailedStream(exc)
        self._count += len(block)
        if not block:
            return first, []
        try:
            text = block if isinstance(block[0], str) else list(map(bytes.decode, block))
            if max(map(len, text)) <= MAX_ROW_CHARACTERS:
                rows = list(csv.reader(text, strict=True))
                if len(rows) == len(block) and not isinstance(self._stream, _FailedStream):
                    return first, rows
        except (UnicodeDecodeError, csv.Error):
            pass
        self._replay.extend(zip(itertools.count(first), block))
        return None

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


class _FailedStream:
    """A stream that failed: it fails again when read past the lines that came before."""

    def __init__(self, error: Exception):
        self._error = error

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raise self._error


#: Lines read at once by ``_RowLines.plain_rows``: a block with one row over several
#: lines (or a bad byte) is read row by row, so not too many.
PLAIN_BLOCK_LINES = 1000


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


def _parse_row(pending: _Pending, reading: _Reading) -> _Row:
    values, header, sites = pending.values, reading.header, reading.sites
    if len(values) > len(header):
        raise RowRejected(f"has {len(values)} fields but the header has {len(header)}")
    if "\x00" in "".join(values):
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
        if not _PLAIN_URL.fullmatch(url):
            try:
                parts = urllib.parse.urlsplit(url)
            except ValueError as problem:  # e.g. an IPv6 host without its closing bracket
                raise RowRejected(f"url is not a valid URL ({problem}): {url!r}") from None
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise RowRejected(f"url must be an http(s) URL, got {url!r}")
    if query is not None:
        query = _SPACES.sub(" ", query)
        if len(query) > MAX_TEXT:
            raise RowRejected(f"query is longer than {MAX_TEXT} characters")
    key = pending.key  # named by a url or a query, checked above
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
    extra = {name: fields[name] for name in reading.extra_columns if fields.get(name)}
    if extra and not _CHOICE_SETTINGS.isdisjoint(extra):  # the item's own video format and limits
        try:
            VideoChoice.parse(extra)
        except BadChoice as problem:
            raise RowRejected(str(problem)) from None
    identity = [url, query, title, restriction, priority, extra]
    if check_every is not None:  # rows without it hash as before: re-importing old files changes nothing
        identity.append(check_every)
    content = _IDENTITY_JSON(identity)
    return _Row(
        pending.line,
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
        pending.row_hash,
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


class _Stored(NamedTuple):
    """The stored side of a chunk's keys: what a row is compared with."""

    id: int
    key: str
    content_hash: str
    import_id: str | None
    import_line: int | None
    state: str
    row_hash: str | None
    priority: int


#: Read through the driver's own cursor: a plain tuple for each of a chunk's rows.
EXISTING = (
    "SELECT items.id, items.key, items.content_hash, seen.import_id, seen.import_line, items.state, items.row_hash, "
    "items.priority "
    "FROM items LEFT JOIN item_imports AS seen ON seen.item_id = items.id WHERE items.key "
)
EXISTING_SQLITE = EXISTING + "IN ({})"
EXISTING_POSTGRESQL = EXISTING + "= ANY(%s)"


#: Keys asked for in one statement (SQLite takes at most 32,766 parameters).
EXISTING_KEYS_AT_ONCE = 10_000


def _existing(session: Session, keys: list[str]) -> dict[str, _Stored]:
    postgresql = is_postgresql(session)
    found: dict[str, _Stored] = {}
    cursor = session.connection().connection.cursor()
    try:
        for start in range(0, len(keys), EXISTING_KEYS_AT_ONCE):
            some = keys[start : start + EXISTING_KEYS_AT_ONCE]
            if postgresql:
                cursor.execute(EXISTING_POSTGRESQL, (some,))
            else:
                cursor.execute(EXISTING_SQLITE.format(", ".join("?" * len(some))), some)
            found.update((row[1], _Stored._make(row)) for row in cursor.fetchall())
    finally:
        cursor.close()
    return found


def _store_chunk(
    session: Session, rows: list[_Pending], reading: _Reading, report: ImportReport, reject, now: datetime
) -> None:
    """One transaction: new rows inserted, unchanged ones marked as seen by this import,
    changed ones applied; every write a statement per chunk (or one executemany). On
    PostgreSQL another import may add one of these keys first: the chunk is then rolled
    back and read again (those keys are stored now)."""
    for attempt in range(3):
        try:
            outcome = _write_chunk(session, rows, reading, report.import_id, now)
            break
        except IntegrityError:
            session.rollback()
            if attempt == 2 or not is_postgresql(session):
                raise
    report.added += outcome.added
    report.updated += outcome.updated
    report.unchanged += outcome.unchanged
    for error in sorted(outcome.rejected, key=lambda error: error.line):
        reject(error)


@dataclass
class _ChunkOutcome:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RowError] = field(default_factory=list)


def _write_chunk(
    session: Session, pending: list[_Pending], reading: _Reading, import_id: str, now: datetime
) -> _ChunkOutcome:
    outcome = _ChunkOutcome()
    unchanged = _mark_unchanged(session, pending, import_id)
    outcome.unchanged = len(unchanged)
    if unchanged:
        pending = [row for row in pending if row.line not in unchanged]
    existing = _existing(session, sorted({row.key for row in pending if row.key is not None}))
    #: key -> (line, content hash) of the rows of this chunk so far
    seen_here: dict[str, tuple[int, str]] = {}
    new_rows: list[_Row] = []
    #: (item id, line) of the rows this import read for items it did not add
    touched: list[tuple[int, int]] = []
    #: (item id, row hash) of the unchanged ones read in other words than stored
    reworded: list[tuple[int, str | None]] = []
    changed: list[tuple[Any, _Row]] = []
    for waiting in pending:
        if waiting.error is not None:
            outcome.rejected.append(RowError(waiting.line, waiting.error))
            continue
        stored = existing.get(waiting.key)
        try:
            row = _parse_row(waiting, reading)
        except RowRejected as exc:
            outcome.rejected.append(RowError(waiting.line, str(exc)))
            continue
        earlier = seen_here.get(row.key)
        earlier_line, earlier_hash = earlier if earlier is not None else (None, None)
        if earlier is None and stored is not None and stored.import_id == import_id:
            earlier_line, earlier_hash = stored.import_line, stored.content_hash
        if earlier_line is not None:
            if earlier_hash == row.content_hash:
                outcome.unchanged += 1  # the same row twice in one file is harmless
            else:
                outcome.rejected.append(
                    RowError(
                        row.line, f"key {row.key!r} already used on line {earlier_line} with other values", row.key
                    )
                )
            continue
        seen_here[row.key] = (row.line, row.content_hash)
        if stored is None:
            new_rows.append(row)
        elif stored.content_hash == row.content_hash:
            outcome.unchanged += 1
            touched.append((stored.id, row.line))
            if stored.row_hash != (row.row_hash or None):
                reworded.append((stored.id, row.row_hash or None))
        else:
            changed.append((stored, row))

    if new_rows:
        outcome.added = _insert_new(session, new_rows, import_id, now)
    if changed:
        changed.sort(key=lambda change: change[0].id)  # items locked in id order by every import
        _apply_changes(session, changed, now)
        outcome.updated = len(changed)
        touched += [(stored.id, row.line) for stored, row in changed]
    if touched:
        _mark_seen(session, touched, import_id)
    if reworded:  # every row once after the rules of reading change: one statement
        update_rows(session, PreparedRows(ITEMS, ("id", "row_hash"), reworded), by="id")
    session.commit()
    return outcome


def _mark_unchanged(session: Session, pending: list[_Pending], import_id: str) -> set[int]:
    """The lines of the rows that are the very text their item was stored from: marked as
    read by this import in the database itself, which compares the row hashes, so none of
    them is fetched or parsed (most rows of a nightly re-import).

    Only a key's first row in the chunk is asked about, and an item this import already
    read is left alone: a repeated key is then judged row by row, against the line it
    was first read on."""
    # a key's first row: the last one written, going backwards
    first = [*{row.key: row for row in reversed(pending) if row.row_hash and row.key is not None}.values()]
    if not first:
        return set()
    cursor = session.connection().connection.cursor()  # the driver's: a plain tuple per line
    try:
        if is_postgresql(session):
            first.sort(key=_by_key)  # rows locked in one order by every import: no deadlock
            asked = ([row.key for row in first], [row.row_hash for row in first], [row.line for row in first])
            cursor.execute(MARK_UNCHANGED_POSTGRESQL, (import_id, *asked))
            return {line for (line,) in cursor.fetchall()}
        marked: set[int] = set()
        for start in range(0, len(first), MARK_UNCHANGED_SQLITE_ROWS):
            some = first[start : start + MARK_UNCHANGED_SQLITE_ROWS]
            statement = MARK_UNCHANGED_SQLITE.format(", ".join(["(?, ?, ?)"] * len(some)))
            values = [value for row in some for value in (row.key, row.row_hash, row.line)]
            cursor.execute(statement, [*values, import_id])
            marked.update(line for (line,) in cursor.fetchall())
        return marked
    finally:
        cursor.close()


_by_key = operator.attrgetter("key")


_MARK_UNCHANGED = (
    "INSERT INTO item_imports (item_id, import_id, import_line) "
    "SELECT stored.id, {import_id}, given.line FROM {given} CROSS JOIN {stored} "
    "WHERE true "  # SQLite: an INSERT ... SELECT's ON CONFLICT needs a WHERE before it
    "ON CONFLICT (item_id) DO UPDATE SET import_id = excluded.import_id, import_line = excluded.import_line "
    "WHERE item_imports.import_id <> excluded.import_id "
    "RETURNING item_imports.import_line"
)
#: SQLite: the rows asked about as a VALUES list (faster here than JSON), in statements
#: of at most this many rows (three parameters each; SQLite takes at most 32,766).
#: CROSS JOIN: SQLite reads the given rows first and looks each key up in the index.
MARK_UNCHANGED_SQLITE_ROWS = 10_000
MARK_UNCHANGED_SQLITE = "WITH given(key, row_hash, line) AS (VALUES {}) " + _MARK_UNCHANGED.format(
    import_id="?",
    given="given",
    stored="items AS stored ON stored.key = given.key AND stored.row_hash = given.row_hash",
)
#: PostgreSQL: the rows asked about as arrays. A lateral lookup (LIMIT 1 keeps the
#: planner from flattening it) goes through the key's index for each row; as a plain
#: join PostgreSQL took the arrays for few rows and hashed all of ``items`` instead.
MARK_UNCHANGED_POSTGRESQL = _MARK_UNCHANGED.format(
    import_id="%s",
    given="unnest(%s::varchar[], %s::varchar[], %s::bigint[]) AS given(key, row_hash, line)",
    stored="LATERAL (SELECT items.id FROM items WHERE items.key = given.key AND items.row_hash = given.row_hash "
    "LIMIT 1) AS stored",
)


def _insert_new(session: Session, rows: list[_Row], import_id: str, now: datetime) -> int:
    """Items and their metadata tasks, each table in one driver call. Item ids are taken
    first (SQLite: after the highest, inside the write lock; PostgreSQL: from the
    sequence), so the tasks need no answer from the item insert."""
    ids = _new_item_ids(session, len(rows))
    items = [
        _item_values(row, now) | {"id": item_id, "created_at": now} for row, item_id in zip(rows, ids, strict=True)
    ]
    tasks = [
        new_metadata_task(item_id, site, url, row.priority, now, check_every=row.check_every)
        for row, item_id in zip(rows, ids, strict=True)
        for site, url in row.targets.items()
    ]
    # PostgreSQL: COPY, the fastest way in (a key another import added meanwhile fails the
    # chunk, which is then read again: see ``_store_chunk``). Keys go in one order in every
    # import, so two adding the same keys wait for each other instead of deadlocking.
    postgresql = is_postgresql(session)
    load = copy_rows if postgresql else insert_rows
    if postgresql:
        items.sort(key=operator.itemgetter("key"))
    load(session, prepare_rows(session, ITEMS, items))
    load(session, prepare_rows(session, TASKS, tasks))
    if postgresql:  # a sequence never hands out an id twice: nothing to replace
        marks = [(item_id, import_id, row.line) for row, item_id in zip(rows, ids, strict=True)]
        copy_rows(session, PreparedRows(ITEM_IMPORTS, ("item_id", "import_id", "import_line"), marks))
    else:  # ids follow the highest: a deleted item's id comes again, and its mark is replaced
        _mark_seen(session, [(item_id, row.line) for row, item_id in zip(rows, ids, strict=True)], import_id)
    count = tally(session)
    count.counters[item_counter(ItemState.PENDING)] += len(rows)
    for site, n in collections.Counter(task["site"] for task in tasks).items():
        count.task_moved(TaskKind.METADATA, site, None, TaskState.QUEUED, n)
    return len(rows)


def _new_item_ids(session: Session, n: int) -> list[int]:
    if is_postgresql(session):
        return list(session.scalars(NEW_ITEM_IDS_POSTGRESQL, {"n": n}))
    highest = session.scalar(select(func.coalesce(func.max(ITEMS.c.id), 0)))
    return list(range(highest + 1, highest + 1 + n))


#: The sequence is looked up once (MATERIALIZED), not once per id: that took five times
#: as long as handing out the ids.
NEW_ITEM_IDS_POSTGRESQL = text(
    "WITH sequence AS MATERIALIZED (SELECT CAST(pg_get_serial_sequence('items', 'id') AS regclass) AS name) "
    "SELECT nextval(sequence.name) FROM sequence, generate_series(1, :n)"
)


def _mark_seen(session: Session, touched: list[tuple[int, int]], import_id: str) -> None:
    """This import read these items' rows, on these lines: a later row of the file with
    the same key and other values is then refused, naming the line."""
    if is_postgresql(session):
        ids, lines = zip(*sorted(touched), strict=True)  # locked in id order by every import
        session.execute(MARK_SEEN_POSTGRESQL, {"import_id": import_id, "ids": list(ids), "lines": list(lines)})
        return
    session.connection().exec_driver_sql(MARK_SEEN_SQLITE, [(item_id, import_id, line) for item_id, line in touched])


MARK_SEEN_SQLITE = (
    "INSERT INTO item_imports (item_id, import_id, import_line) VALUES (?, ?, ?) "
    "ON CONFLICT (item_id) DO UPDATE SET import_id = excluded.import_id, import_line = excluded.import_line"
)
MARK_SEEN_POSTGRESQL = text(
    "INSERT INTO item_imports (item_id, import_id, import_line) "
    "SELECT seen.id, :import_id, seen.line FROM unnest(CAST(:ids AS bigint[]), CAST(:lines AS bigint[])) "
    "AS seen(id, line) "
    "ON CONFLICT (item_id) DO UPDATE SET import_id = excluded.import_id, import_line = excluded.import_line"
)


def _apply_changes(session: Session, changed: list[tuple[Any, _Row]], now: datetime) -> None:
    """Changed rows: new values, and a fresh start for sites whose target URL changed; a
    subscription's new interval applies from now; the new priority applies to what still
    waits. The items' metadata tasks are read once (locked) and written in batches."""
    count = tally(session)
    values = [_item_values(row, now) | {"id": stored.id} for stored, row in changed]
    update_rows(session, prepare_rows(session, ITEMS, values), by="id")
    for stored, _ in changed:
        if stored.state != ItemState.PENDING:
            count.counters[item_counter(stored.state)] -= 1
            count.counters[item_counter(ItemState.PENDING)] += 1
    item_ids = [stored.id for stored, _ in changed]
    current: dict[int, dict[str, Any]] = collections.defaultdict(dict)
    metadata = (TASKS.c.kind == TaskKind.METADATA) & TASKS.c.item_id.in_(item_ids)
    columns = (
        TASKS.c.id,
        TASKS.c.item_id,
        TASKS.c.site,
        TASKS.c.url,
        TASKS.c.state,
        TASKS.c.attempts,
        TASKS.c.done_by,
        TASKS.c.known_count,
        TASKS.c.check_every,
    )
    for task in session.execute(select(*columns).where(metadata).order_by(TASKS.c.id).with_for_update()):
        current[task.item_id][task.site] = task
    dropped, added, restarted, interval, finished, waiting, priorities = [], [], [], [], [], [], []
    for stored, row in changed:
        tasks = current[stored.id]
        dropped += [task for site, task in tasks.items() if site not in row.targets]
        for site, url in row.targets.items():
            task = tasks.get(site)
            if task is None:
                added.append(new_metadata_task(stored.id, site, url, row.priority, now, check_every=row.check_every))
            elif task.url != url:
                restarted.append((task, url))
        kept = [task for site, task in tasks.items() if site in row.targets]
        restarted_ids = {task.id for task, _ in restarted}
        interval += [
            {"b_id": task.id, "b_every": row.check_every} for task in kept if task.check_every != row.check_every
        ]
        after = [(task, TaskState.QUEUED if task.id in restarted_ids else task.state) for task in kept]
        # A finished check becomes a subscription due now; a waiting subscription that is no longer one is done.
        if row.check_every is not None:
            finished += [task for task, state in after if state in (TaskState.DONE, TaskState.NOT_FOUND)]
        else:
            waiting += [task for task, state in after if state == TaskState.SCHEDULED]
        if stored.priority != row.priority:
            priorities.append({"b_item": stored.id, "b_priority": row.priority})
    if dropped:
        # A lease still holding one of these gets a conflict for it when it reports.
        session.execute(delete(Task).where(Task.id.in_([task.id for task in dropped])))
        count.task_rows(
            TaskChange(
                TaskKind.METADATA, t.site, shown(t.state, t.attempts), None, was_by=t.done_by, was_known=t.known_count
            )
            for t in dropped
        )
    if added:
        insert_rows(session, prepare_rows(session, TASKS, added))
        for task in added:
            count.task_moved(TaskKind.METADATA, task["site"], None, TaskState.QUEUED)
    if restarted:
        fresh = {f"b_{name}": value for name, value in fresh_start(now).items()}
        session.execute(RESTART_TASK, [fresh | {"b_id": task.id, "b_url": url} for task, url in restarted])
        count.task_rows(
            TaskChange(
                TaskKind.METADATA, t.site, shown(t.state, t.attempts), TaskState.QUEUED, t.done_by, None, t.known_count
            )
            for t, _ in restarted
        )
    if interval:
        session.execute(SET_INTERVAL, [row | {"b_now": now} for row in interval])
    for tasks, state in ((finished, TaskState.SCHEDULED), (waiting, TaskState.DONE)):
        if not tasks:
            continue
        moved = {"state": state, "updated_at": now} | ({"available_at": now} if state == TaskState.SCHEDULED else {})
        session.execute(update(Task).where(Task.id.in_([task.id for task in tasks])).values(moved))
        count.task_rows(TaskChange(TaskKind.METADATA, t.site, t.state, state, t.done_by, t.done_by) for t in tasks)
    if priorities:
        session.execute(SET_PRIORITY, [row | {"b_now": now} for row in priorities])
    refresh_item_states(session, item_ids)


RESTART_TASK = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("b_id"))
    .values({"url": bindparam("b_url"), **{name: bindparam(f"b_{name}") for name in fresh_start(utcnow())}})
)
SET_INTERVAL = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("b_id"))
    .values(check_every=bindparam("b_every"), updated_at=bindparam("b_now"))
)
#: The new priority applies to whatever of an item still waits in the queue.
SET_PRIORITY = (
    update(TASKS)
    .where(
        TASKS.c.item_id == bindparam("b_item"),
        or_(
            *(
                TASKS.c.state == sql_literal(state)
                for state in (TaskState.QUEUED, TaskState.SCHEDULED, TaskState.PAUSED)
            )
        ),
    )
    .values(priority=bindparam("b_priority"), updated_at=bindparam("b_now"))
)


def _item_values(row: _Row, now: datetime) -> dict[str, Any]:
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
        "row_hash": row.row_hash or None,
        "updated_at": now,
    }
