"""Tables of the coordinator. Tasks of both kinds share one table and one leasing mechanism."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from common.states import ItemState, LeaseState, TaskState

from .database import UTCDateTime, utcnow
from .extensions import db

#: 64-bit ids on PostgreSQL; SQLite's rowid alias must be spelled INTEGER.
BigId = BigInteger().with_variant(Integer, "sqlite")
#: Half of each page of ``item_imports`` left free: a re-import's new row versions fit
#: beside the old ones (PostgreSQL's in-place "HOT" updates, no index touched).
ITEM_IMPORTS_FILLFACTOR = 50


class Role(StrEnum):
    CLIENT = "client"  # lease and submit
    ADMIN = "admin"  # also import inventory and requeue tasks


def _only(condition: str) -> dict:
    """A partial index's condition, for both backends."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


class ApiKey(db.Model):
    """A client node (or an operator) and the hash of its key; the name is the client's name."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    client_version: Mapped[str | None] = mapped_column(String(32))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Item(db.Model):
    """One row of the inventory: a URL or a query someone wants archived."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(500), unique=True)
    url: Mapped[str | None] = mapped_column(Text)
    query: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    sites: Mapped[list[str] | None] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=ItemState.PENDING)
    #: The row's exact text as last imported (with the header and the sites it was read
    #: against): a re-import that finds the same needs not parse it again.
    row_hash: Mapped[str | None] = mapped_column(String(64))
    #: A subscription: checked again this many seconds after each check (None: the site's
    #: default, else the global one; both default to "once").
    check_every: Mapped[int | None] = mapped_column(Integer)
    #: Paused by an operator: its waiting tasks are ``paused`` until it is resumed.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Every post it found is done (or dead, or a duplicate): set when that became true
    #: (the moment of its ``item.synchronized`` event), cleared when a check finds more.
    synchronized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_items_state", "state"),)


class ItemImport(db.Model):
    """Which import last read an item, and from which line: finds a key repeated in one
    file. Kept beside ``items`` because every import writes it for every row it reads: a
    nightly re-import of an unchanged inventory rewrites these narrow rows, in place
    where PostgreSQL can (free room on each page), instead of every item and its indexes.

    No foreign key to ``items``: checking it on every new item cost PostgreSQL more than
    writing the row, and items are never deleted."""

    __tablename__ = "item_imports"

    item_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    import_id: Mapped[str] = mapped_column(String(36))
    import_line: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = ({"postgresql_with": {"fillfactor": ITEM_IMPORTS_FILLFACTOR}},)


class Task(db.Model):
    """A unit of work of either kind, leased by exactly one live lease at a time."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(100))
    #: The inventory item it came from (for downloads: the first item that found it).
    item_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("items.id", ondelete="SET NULL"))
    #: The site's own id of a found post (downloads); dedup key with ``site``.
    remote_id: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    #: For downloads: the post's metadata as found; written into the sidecar by the node.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=TaskState.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The live lease holding it (only while leased).
    lease_id: Mapped[str | None] = mapped_column(String(64))
    #: The lease whose result was recorded last: makes a re-sent submit harmless.
    result_lease_id: Mapped[str | None] = mapped_column(String(64))
    leased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_class: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Metadata: how many things were found (downloads count bytes in ``files``).
    found_count: Mapped[int | None] = mapped_column(Integer)
    #: Metadata: how many of those were known anchors, so no download task was made.
    known_count: Mapped[int | None] = mapped_column(Integer)
    #: Downloads in state ``duplicate``: the file the archive already holds (not a foreign
    #: key: None when only an imported anchor knew the hash).
    duplicate_of: Mapped[int | None] = mapped_column(BigId)
    #: Metadata: the item's own check interval, copied at import (None: the site's or the
    #: global default); and how many checks it has had.
    check_every: Mapped[int | None] = mapped_column(Integer)
    check_count: Mapped[int | None] = mapped_column(Integer)
    #: Downloads: a full check of an item that had found it found it no more (deleted
    #: upstream); the files and records stay. Cleared when a check finds it again.
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gone_check_id: Mapped[int | None] = mapped_column(BigId)
    #: The key that completed it. Not a foreign key (see migration 0003): the hot path
    #: only ever writes the id of the caller it just authenticated.
    done_by: Mapped[int | None] = mapped_column(Integer)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("uq_tasks_download", "site", "remote_id", unique=True, **_only("kind = 'download'")),
        Index("uq_tasks_metadata", "item_id", "site", unique=True, **_only("kind = 'metadata'")),
        Index("ix_tasks_item", "item_id"),
        # Indexed only while it matters: fewer B-tree writes per task on the hot path.
        Index("ix_tasks_lease", "lease_id", **_only("state = 'leased'")),
        Index("ix_tasks_done_at", "done_at", **_only("done_at IS NOT NULL")),
        Index("ix_tasks_error_at", "last_error_at", **_only("last_error_at IS NOT NULL")),
        # Scheduled tasks stay out of the queue indexes: the lease queues those that are due.
        Index("ix_tasks_scheduled", "available_at", **_only("state = 'scheduled'")),
        Index("ix_tasks_paused", "item_id", **_only("state = 'paused'")),
        Index("ix_tasks_gone", "gone_at", **_only("gone_at IS NOT NULL")),
    )


# The lease query walks only queued tasks, in priority-then-age order: per site, and
# across sites for metadata, so it never sorts the queue. Queries name these states as
# SQL literals (``leasing.QUEUED``): a bound parameter could not match a partial index
# in PostgreSQL's generic plans.
Index("ix_tasks_queue", Task.kind, Task.site, Task.priority.desc(), Task.id, **_only("state = 'queued'"))
Index("ix_tasks_queue_metadata", Task.priority.desc(), Task.id, **_only("state = 'queued' AND kind = 'metadata'"))


class Lease(db.Model):
    __tablename__ = "leases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    site: Mapped[str | None] = mapped_column(String(100))
    client_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    state: Mapped[str] = mapped_column(String(16), default=LeaseState.ACTIVE)
    task_count: Mapped[int] = mapped_column(Integer)
    #: The length asked for at creation; a heartbeat extends by this much unless told otherwise.
    seconds: Mapped[int] = mapped_column(Integer, server_default=text("3600"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_leases_state_expires", "state", "expires_at"),)


class SiteState(db.Model):
    """Shared runtime state of a site: a cooldown set by any client's 429 applies to all."""

    __tablename__ = "site_states"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    cooldown_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cooldown_reason: Mapped[str | None] = mapped_column(Text)
    #: Paused by an operator: none of its tasks is leased until it is resumed.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The last health test a node ran (``python -m client test-site``): when, who, how.
    test_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    test_client_id: Mapped[int | None] = mapped_column(Integer)
    test_passed: Mapped[bool | None] = mapped_column()
    test_checks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class File(db.Model):
    """A file a node downloaded: where it lives (the node's ``--dest`` and/or the central
    file store), how big, which hashes."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Not foreign keys (see migration 0003): the submit path, their only writer, names a
    # task it has just locked and the caller it has just authenticated.
    task_id: Mapped[int] = mapped_column(BigId)
    client_id: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: Reported by nodes since 0004 (boorus publish it: it lets a post be skipped unfetched).
    md5: Mapped[str | None] = mapped_column(String(32))
    mime: Mapped[str | None] = mapped_column(String(100))
    phash: Mapped[str | None] = mapped_column(String(16))
    dhash: Mapped[str | None] = mapped_column(String(16))
    #: Its object in the file store (content-addressed by sha256), since 0006; None: only on the node.
    store_key: Mapped[str | None] = mapped_column(Text)
    #: Does the node still keep it at ``path``? (False: removed after a verified upload.)
    on_node: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Video and audio files, as probed on the node (since 0009): seconds, pixels, codecs.
    duration: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    vcodec: Mapped[str | None] = mapped_column(String(32))
    acodec: Mapped[str | None] = mapped_column(String(32))
    container: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("uq_files_task_path", "task_id", "client_id", "path", unique=True),
        Index("ix_files_sha256", "sha256"),
        Index("ix_files_md5", "md5", **_only("md5 IS NOT NULL")),
        Index("ix_files_client", "client_id", "id"),
        Index("ix_files_created", "created_at"),
    )


class ItemPost(db.Model):
    """Which inventory items found which download task: a post found by two items (two
    tag searches) is one task, listed under both."""

    __tablename__ = "item_posts"

    item_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_item_posts_task", "task_id"),)


class KnownFile(db.Model):
    """An anchor: something the archive already has from elsewhere (an older archive, a
    gallery-dl download archive), by post (site + remote id), by URL, or by content hash.
    A found post it names becomes no download task."""

    __tablename__ = "known_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    site: Mapped[str | None] = mapped_column(String(100))
    remote_id: Mapped[str | None] = mapped_column(String(255))
    #: sha256 of the URL: URLs may be longer than a B-tree entry holds.
    url_key: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    md5: Mapped[str | None] = mapped_column(String(32))
    #: Where it came from: the file name given to import-known.
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("uq_known_post", "site", "remote_id", unique=True, **_only("remote_id IS NOT NULL")),
        Index("uq_known_url", "url_key", unique=True, **_only("url_key IS NOT NULL")),
        Index("uq_known_sha256", "sha256", unique=True, **_only("sha256 IS NOT NULL")),
        Index("uq_known_md5", "md5", unique=True, **_only("md5 IS NOT NULL")),
    )


class TaskCount(db.Model):
    """Tasks per kind, site and state, kept as they change (``server.counts``)."""

    __tablename__ = "task_counts"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    site: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: On PostgreSQL concurrent transactions add to different rows; readers add them up.
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class NodeCount(db.Model):
    """Per node: the tasks it did that are done now, the files and bytes it recorded."""

    __tablename__ = "node_counts"

    client_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    tasks_done: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)


class MinuteCount(db.Model):
    """Per minute, kind and node: tasks completed and bytes recorded (kept for a day)."""

    __tablename__ = "minute_counts"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    done: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)


class Counter(db.Model):
    """A named count: items per state, distinct content, skipped known posts, gone posts."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class Check(db.Model):
    """One check of a metadata task (a subscription is checked again and again): when, by
    which node, what it saw, and how it ended."""

    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigId)
    item_id: Mapped[int | None] = mapped_column(BigId)
    site: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[int] = mapped_column(Integer)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: done | not_found | failed
    outcome: Mapped[str] = mapped_column(String(16))
    posts_seen: Mapped[int] = mapped_column(Integer, default=0)
    new_posts: Mapped[int] = mapped_column(Integer, default=0)
    known_posts: Mapped[int] = mapped_column(Integer, default=0)
    #: The node stopped enumerating at posts the archive already had.
    stopped_at_known: Mapped[bool] = mapped_column(default=False)
    #: The coordinator asked for a check to the end (deletion sync runs after those).
    full: Mapped[bool] = mapped_column(default=False)
    #: The newest remote ids it saw: what the next check stops at.
    head: Mapped[list[str] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_checks_task", "task_id", "id"), Index("ix_checks_item", "item_id", "id"))


class Event(db.Model):
    """The outbox: something happened (a file downloaded, an item synchronized, a task
    dead...), written in the transaction that made it happen; ``flask events run``
    delivers it to RabbitMQ and webhooks. The id is the event's identity for consumers
    (AUTOINCREMENT on SQLite: a pruned id is never handed out again)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_events_created", "created_at"), {"sqlite_autoincrement": True})


class EventDelivery(db.Model):
    """An event one destination has (its broker confirmed it, its webhook answered 2xx)."""

    __tablename__ = "event_deliveries"

    destination: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventDestination(db.Model):
    """How delivery to one destination goes: every event up to ``floor`` is delivered (or
    not wanted); failures in a row, the next attempt and the last error (for ``events
    status``)."""

    __tablename__ = "event_destinations"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    floor: Mapped[int] = mapped_column(BigId, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
