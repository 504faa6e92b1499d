"""Anchors: what the archive already has, so it is never fetched again.

An anchor names a post (site + remote id), a URL, or content (sha256 / md5). They come
from ``import-known``: a CSV, or a gallery-dl ``--download-archive`` SQLite file
(hydownloader's anchor database has the same shape). A metadata submit asks, in one
statement for all its found posts, which of them the archive knows (``lookup_known``);
``server.transitions.metadata_done`` decides what that makes of each post.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import BigInteger, cast, func, literal, null, select, tuple_, union_all
from sqlalchemy.orm import Session

from common.protocol import UNSTORABLE_TEXT
from common.sites import is_fetched_url

from .counts import KNOWN_COLUMNS, known_counter, tally
from .database import insert_ignore, utcnow
from .errors import InvalidInput
from .models import File, KnownFile
from .sites import HASH_SHAPES, SiteRegistry

#: A statement's share of candidates: SQLite binds at most 32,766 parameters.
LOOKUP_CHUNK = 5000
INSERT_CHUNK = 5000
#: Row errors listed in a refusal (all of them are counted).
MAX_LISTED_ERRORS = 100
SQLITE_MAGIC = b"SQLite format 3\x00"
CSV_COLUMNS = ("site", "remote_id", "url", "sha256", "md5")

KNOWN = KnownFile.__table__
FILES = File.__table__


def url_key(url: str) -> str:
    """How an anchor's URL is indexed: URLs may be longer than a B-tree entry holds."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------------- lookup


@dataclass(frozen=True)
class Holder:
    """Who holds some content: a file record, or (``file_id`` None) only an anchor."""

    file_id: int | None


@dataclass(frozen=True)
class Candidate:
    """A found post as the lookup sees it."""

    site: str
    remote_id: str
    url: str | None
    hashes: dict[str, str] = field(default_factory=dict)


@dataclass
class KnownSet:
    """What one lookup found: the known posts and URLs, and the holders of known content."""

    posts: set[tuple[str, str]] = field(default_factory=set)
    url_keys: set[str] = field(default_factory=set)
    holders: dict[tuple[str, str], Holder] = field(default_factory=dict)

    def names_post(self, site: str, remote_id: str, url: str | None) -> bool:
        return (site, remote_id) in self.posts or (url is not None and url_key(url) in self.url_keys)

    def holder_of(self, hashes: dict[str, str]) -> Holder | None:
        """A file with one of these hashes (preferred), else an anchor naming one."""
        found = [self.holders[item] for item in hashes.items() if item in self.holders]
        with_file = [holder for holder in found if holder.file_id is not None]
        return (with_file or found or [None])[0]


def lookup_known(session: Session, candidates: Iterable[Candidate]) -> KnownSet:
    """Which of these posts the archive knows, in one statement per chunk of candidates
    (not a lookup per post): anchors by post, URL and hash, and file records by hash."""
    known = KnownSet()
    candidates = list(candidates)
    for start in range(0, len(candidates), LOOKUP_CHUNK):
        _lookup_chunk(session, candidates[start : start + LOOKUP_CHUNK], known)
    return known


def _lookup_chunk(session: Session, candidates: list[Candidate], known: KnownSet) -> None:
    no_file = cast(null(), BigInteger).label("file_id")
    posts = sorted({(c.site, c.remote_id) for c in candidates})
    urls = sorted({url_key(c.url) for c in candidates if c.url})
    parts = [
        select(literal("post").label("what"), KNOWN.c.site.label("a"), KNOWN.c.remote_id.label("b"), no_file).where(
            tuple_(KNOWN.c.site, KNOWN.c.remote_id).in_(posts)
        )
    ]
    if urls:
        parts.append(select(literal("url"), KNOWN.c.url_key, null(), no_file).where(KNOWN.c.url_key.in_(urls)))
    for kind in HASH_SHAPES:
        values = sorted({c.hashes[kind] for c in candidates if kind in c.hashes})
        if not values:
            continue
        parts.append(select(literal(kind), KNOWN.c[kind], null(), no_file).where(KNOWN.c[kind].in_(values)))
        parts.append(
            select(literal(kind), FILES.c[kind], null(), func.min(FILES.c.id))
            .where(FILES.c[kind].in_(values))
            .group_by(FILES.c[kind])
        )
    for what, a, b, file_id in session.execute(union_all(*parts)):
        if what == "post":
            known.posts.add((a, b))
        elif what == "url":
            known.url_keys.add(a)
        elif file_id is not None or (what, a) not in known.holders:
            known.holders[(what, a)] = Holder(file_id)


# ----------------------------------------------------------------------- import


@dataclass
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclass
class KnownReport:
    """What an import did: anchors read, newly added, already known."""

    source: str
    format: str
    rows: int = 0
    added: int = 0
    already_known: int = 0

    def summary(self) -> str:
        return (
            f"{self.source} ({self.format}): {self.rows} row(s), {self.added} anchor(s) added, "
            f"{self.already_known} already known"
        )


def import_known(
    session: Session,
    stream: IO[bytes],
    *,
    sites: SiteRegistry,
    source: str,
    site: str | None = None,
    now: datetime | None = None,
) -> KnownReport:
    """Import anchors from a CSV or a gallery-dl download archive (told apart by their
    first bytes), all or nothing: any bad row refuses the whole file (``InvalidInput``
    listing each line and its reason) and nothing is written."""
    now = now or utcnow()
    if site is not None and site not in sites:
        raise InvalidInput.at(["site"], f"unknown site {site!r}; known: {', '.join(sites.names()) or 'none'}")
    head = stream.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        report = KnownReport(source, "gallery-dl archive")
        if site is None:
            raise InvalidInput.at(["site"], "a gallery-dl archive does not say which site it is of: name the site")
        anchors, errors = _archive_anchors(head, stream, sites.get(site))
    else:
        report = KnownReport(source, "csv")
        anchors, errors = _csv_anchors(head, stream, sites, site)
    if errors:
        listed = "; ".join(str(error) for error in errors[:MAX_LISTED_ERRORS])
        more = f" (and {len(errors) - MAX_LISTED_ERRORS} more)" if len(errors) > MAX_LISTED_ERRORS else ""
        raise InvalidInput(
            f"{source}: {len(errors)} bad row(s), nothing imported: {listed}{more}",
            errors={"rows": [{"line": e.line, "reason": e.reason} for e in errors[:MAX_LISTED_ERRORS]]},
        )
    report.rows = len(anchors)
    rows = [{**anchor, "source": source[:1000], "created_at": now} for anchor in _split(anchors)]
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        added = session.execute(insert_ignore(session, KNOWN).returning(*KNOWN_COUNTED), chunk).all()
        report.added += len(added)
        count = tally(session)
        for position, column in enumerate(KNOWN_COUNTED):
            count.counters[known_counter(column.name)] += sum(1 for row in added if row[position] is not None)
    session.commit()
    report.already_known = len(rows) - report.added
    return report


def _split(anchors: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One anchor row per identifier: a CSV row naming a post and its md5 is two anchors,
    so neither is lost when the other is already known."""
    empty = {"site": None, "remote_id": None, "url": None, "url_key": None, "sha256": None, "md5": None}
    for anchor in anchors:
        if anchor.get("remote_id"):
            yield {**empty, "site": anchor["site"], "remote_id": anchor["remote_id"]}
        if anchor.get("url"):
            yield {**empty, "url": anchor["url"], "url_key": url_key(anchor["url"])}
        for kind in HASH_SHAPES:
            if anchor.get(kind):
                yield {**empty, kind: anchor[kind]}


def _csv_anchors(
    head: bytes, stream: IO[bytes], sites: SiteRegistry, default_site: str | None
) -> tuple[list[dict[str, Any]], list[RowError]]:
    data = head + stream.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [], [RowError(line, "not UTF-8 text (neither a CSV nor a gallery-dl archive)")]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    anchors: list[dict[str, Any]] = []
    errors: list[RowError] = []
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        return [], [RowError(1, f"the header is not CSV: {exc}")]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if not header or unknown or len(set(header)) != len(header):
        reason = f"unknown column(s) {', '.join(unknown)}; " if unknown else ""
        return [], [RowError(1, f"{reason}the header names columns from {', '.join(CSV_COLUMNS)}, each once")]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(reader.line_num, f"not CSV: {exc}"))
            break
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append(RowError(line, f"{len(row)} field(s), the header has {len(header)}"))
            continue
        values = {name: cell.strip() for name, cell in zip(header, row, strict=True) if cell.strip()}
        anchor, reason = _anchor(values, sites, default_site)
        if reason:
            errors.append(RowError(line, reason))
        else:
            anchors.append(anchor)
    return anchors, errors


def _anchor(values: dict[str, str], sites: SiteRegistry, default_site: str | None) -> tuple[dict[str, Any], str]:
    if any(UNSTORABLE_TEXT.search(value) for value in values.values()):
        return {}, "contains a NUL or an unpaired surrogate"
    anchor: dict[str, Any] = {}
    if "remote_id" in values:
        site = values.get("site") or default_site
        if site is None:
            return {}, "remote_id needs a site (a site column, or name the site for the whole file)"
        if site not in sites:
            return {}, f"unknown site {site!r}"
        if len(values["remote_id"]) > 255:
            return {}, "remote_id is longer than 255 characters"
        anchor.update(site=site, remote_id=values["remote_id"])
    elif "site" in values and not any(name in values for name in ("url", "sha256", "md5")):
        return {}, "a site alone names nothing: add remote_id"
    if "url" in values:
        if not is_fetched_url(values["url"]) or len(values["url"]) > 4000:
            return {}, "url must be an http(s) URL of at most 4000 characters"
        anchor["url"] = values["url"]
    for kind, shape in HASH_SHAPES.items():
        if kind in values:
            if not shape.fullmatch(values[kind]):
                return {}, f"{kind} must be {_digits(kind)} hexadecimal digits"
            anchor[kind] = values[kind].lower()
    if not anchor:
        return {}, "names nothing: give site and remote_id, url, sha256 or md5"
    return anchor, ""


def _digits(kind: str) -> int:
    return {"md5": 32, "sha256": 64}[kind]


def _archive_anchors(head: bytes, stream: IO[bytes], site) -> tuple[list[dict[str, Any]], list[RowError]]:
    """The entries of a gallery-dl archive, each mapped to a remote id by the site's
    ``archive_id_pattern``. The file is a stranger's: opened read-only, views and
    triggers refused (only a table named ``archive`` is read)."""
    with tempfile.NamedTemporaryFile(prefix="fetchfleet-archive-", suffix=".sqlite3") as copy:
        copy.write(head)
        while chunk := stream.read(1 << 20):
            copy.write(chunk)
        copy.flush()
        try:
            entries = _archive_entries(copy.name)
        except sqlite3.DatabaseError as exc:
            return [], [RowError(0, f"not a readable gallery-dl archive: {exc}")]
    anchors, errors = [], []
    pattern: re.Pattern[str] = site.archive_id_pattern
    for number, entry in enumerate(entries, 1):
        match = pattern.search(entry) if isinstance(entry, str) else None
        remote_id = match.group("id") if match else None
        if not remote_id or len(remote_id) > 255 or UNSTORABLE_TEXT.search(remote_id):
            reason = f"entry {str(entry)[:200]!r} names no post id (pattern {pattern.pattern})"
            errors.append(RowError(number, reason))
            continue
        anchors.append({"site": site.name, "remote_id": remote_id})
    return anchors, errors


def _archive_entries(path: str) -> list[Any]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        table = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archive'").fetchone()
        if table is None:
            raise sqlite3.DatabaseError("it has no table named archive (gallery-dl's archive(entry))")
        columns = {row[1] for row in connection.execute("PRAGMA table_info(archive)")}
        if "entry" not in columns:
            raise sqlite3.DatabaseError("its archive table has no entry column")
        # gallery-dl makes it WITHOUT ROWID: entries in key order, numbered from 1.
        return [row[0] for row in connection.execute("SELECT entry FROM archive ORDER BY entry")]
    finally:
        connection.close()


#: What an anchor can name, as /stats labels them.
KNOWN_LABELS = {"remote_id": "posts", "url_key": "urls", "sha256": "sha256", "md5": "md5"}
KNOWN_COUNTED = tuple(KNOWN.c[name] for name in KNOWN_COLUMNS)


def known_counts(counters: dict[str, int]) -> dict[str, int]:
    """Anchors by what they name (for /stats), from the kept counts."""
    return {label: counters.get(known_counter(column), 0) for column, label in KNOWN_LABELS.items()}


__all__ = ["Candidate", "Holder", "KnownReport", "KnownSet", "import_known", "lookup_known", "url_key"]
