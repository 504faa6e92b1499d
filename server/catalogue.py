"""The archive catalogue: what was found and fetched, queried without HTTP (the views
and the CLI both call these). Every list is keyset-paginated on an id (or, for
duplicate groups, on their sort key): a page is an index range, never an OFFSET, and
rows inserted between pages are neither missed nor repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from common.states import TaskKind, TaskState

from .checks import check_totals, recent_checks
from .database import read_only
from .errors import InvalidInput, NotFound
from .models import ApiKey, File, Item, ItemPost, Task
from .similar import HashIndex, Match, clusters

ITEMS, TASKS, FILES, KEYS, LINKS = (
    Item.__table__,
    Task.__table__,
    File.__table__,
    ApiKey.__table__,
    ItemPost.__table__,
)
MAX_DISTANCE = 16


@dataclass
class Page:
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Pass back as ``cursor`` for the next page; None: this was the last.
    next_cursor: str | None = None


#: The largest id either database holds (a BIGINT).
_LARGEST_ID = 2**63 - 1


def _cursor_number(text: str) -> int | None:
    """A cursor's number: ASCII digits only (``"³".isdigit()`` is true, ``int("³")`` fails),
    within what a BIGINT holds; None otherwise."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _LARGEST_ID:
        return None
    return int(text)


def _after_id(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    number = _cursor_number(cursor)
    if number is None:
        raise InvalidInput.at(["cursor"], "not a cursor this endpoint gave out", location="query")
    return number


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ------------------------------------------------------------------------ items

ITEM_COLUMNS = (
    ITEMS.c.id,
    ITEMS.c.check_every,
    ITEMS.c.paused_at,
    ITEMS.c.key,
    ITEMS.c.url,
    ITEMS.c.query,
    ITEMS.c.title,
    ITEMS.c.state,
    ITEMS.c.sites,
    ITEMS.c.priority,
    ITEMS.c.extra,
    ITEMS.c.created_at,
    ITEMS.c.updated_at,
)


def list_items(
    session: Session,
    *,
    state: str | None = None,
    site: str | None = None,
    text: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """Inventory items in id order: by state, by a site they are resolved on, by text in
    their key, title or query."""
    statement = select(*ITEM_COLUMNS).where(ITEMS.c.id > _after_id(cursor)).order_by(ITEMS.c.id).limit(limit + 1)
    if state is not None:
        statement = statement.where(ITEMS.c.state == state)
    if site is not None:
        statement = statement.where(
            exists().where(TASKS.c.item_id == ITEMS.c.id, TASKS.c.kind == TaskKind.METADATA, TASKS.c.site == site)
        )
    if text:
        pattern = _like(text)
        statement = statement.where(
            or_(*(column.ilike(pattern, escape="\\") for column in (ITEMS.c.key, ITEMS.c.title, ITEMS.c.query)))
        )
    read_only(session)
    rows = [row._asdict() for row in session.execute(statement)]
    session.commit()
    return _page(rows, limit)


def _page(rows: list[dict[str, Any]], limit: int, key: str = "id") -> Page:
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, str(rows[-1][key]))
    return Page(rows)


def show_item(
    session: Session,
    key: str,
    *,
    downloads_limit: int = 1000,
    downloads_cursor: str | None = None,
    checks_limit: int = 10,
):
    """An item with its metadata task per site, the download tasks it found (a page of
    them, in task id order), their files, totals, and its last checks (a subscription:
    when the next is due)."""
    read_only(session)
    item = session.execute(select(*ITEM_COLUMNS).where(ITEMS.c.key == key)).one_or_none()
    if item is None:
        session.commit()
        raise NotFound(f"no item {key[:200]!r}")
    item = item._asdict()
    item["metadata_tasks"] = [
        row._asdict()
        for row in session.execute(
            select(
                TASKS.c.id,
                TASKS.c.site,
                TASKS.c.url,
                TASKS.c.state,
                TASKS.c.attempts,
                TASKS.c.error_class,
                TASKS.c.last_error,
                TASKS.c.last_error_at,
                TASKS.c.found_count,
                TASKS.c.known_count,
                TASKS.c.done_at.label("found_at"),
                TASKS.c.available_at,
                TASKS.c.check_count,
            )
            .where(TASKS.c.item_id == item["id"], TASKS.c.kind == TaskKind.METADATA)
            .order_by(TASKS.c.site)
        )
    ]
    linked = LINKS.c.item_id == item["id"]
    downloads = [
        row._asdict()
        for row in session.execute(
            select(
                TASKS.c.id,
                TASKS.c.site,
                TASKS.c.remote_id,
                TASKS.c.url,
                TASKS.c.state,
                TASKS.c.attempts,
                TASKS.c.error_class,
                TASKS.c.last_error,
                TASKS.c.duplicate_of,
                TASKS.c.done_at,
                TASKS.c.gone_at,
            )
            .join(LINKS, LINKS.c.task_id == TASKS.c.id)
            .where(linked, TASKS.c.id > _after_id(downloads_cursor))
            .order_by(TASKS.c.id)
            .limit(downloads_limit + 1)
        )
    ]
    page = _page(downloads, downloads_limit)
    files_by_task: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in page.rows}
    if files_by_task:
        for row in session.execute(_file_select().where(FILES.c.task_id.in_(list(files_by_task)))):
            files_by_task[row.task_id].append(_file_row(row))
    for row in page.rows:
        row["files"] = files_by_task[row["id"]]
    by_state = dict(
        session.execute(
            select(TASKS.c.state, func.count())
            .join(LINKS, LINKS.c.task_id == TASKS.c.id)
            .where(linked)
            .group_by(TASKS.c.state)
        ).all()
    )
    files, size = session.execute(
        select(func.count(FILES.c.id), func.coalesce(func.sum(FILES.c.size), 0))
        .join(LINKS, LINKS.c.task_id == FILES.c.task_id)
        .where(linked)
    ).one()
    gone = session.scalar(
        select(func.count())
        .select_from(TASKS)
        .join(LINKS, LINKS.c.task_id == TASKS.c.id)
        .where(linked, TASKS.c.gone_at.is_not(None))
    )
    item["checks"] = recent_checks(session, item["id"], checks_limit)
    item["check_totals"] = check_totals(session, item["id"])
    due = [task["available_at"] for task in item["metadata_tasks"] if task["state"] == TaskState.SCHEDULED]
    item["next_check_at"] = min(due) if due else None
    session.commit()
    item["downloads"] = page.rows
    item["next_downloads_cursor"] = page.next_cursor
    item["totals"] = {
        "found": sum(by_state.values()),
        "known": sum(task["known_count"] or 0 for task in item["metadata_tasks"]),
        "downloads": by_state,
        "files": files,
        "bytes": int(size),
        "gone_upstream": gone,
    }
    return item


# ------------------------------------------------------------------------ files

FILE_COLUMNS = (
    FILES.c.id,
    FILES.c.task_id,
    TASKS.c.site,
    TASKS.c.remote_id,
    TASKS.c.url.label("task_url"),
    ITEMS.c.key.label("item"),
    KEYS.c.name.label("node"),
    FILES.c.path,
    FILES.c.size,
    FILES.c.sha256,
    FILES.c.md5,
    FILES.c.mime,
    FILES.c.phash,
    FILES.c.dhash,
    FILES.c.store_key,
    FILES.c.on_node,
    FILES.c.created_at,
)


def _file_select():
    """Files with their task (site, remote id), the item that found the task first, and
    the node that keeps them."""
    return (
        select(*FILE_COLUMNS)
        .outerjoin(TASKS, TASKS.c.id == FILES.c.task_id)
        .outerjoin(ITEMS, ITEMS.c.id == TASKS.c.item_id)
        .outerjoin(KEYS, KEYS.c.id == FILES.c.client_id)
    )


def _file_row(row) -> dict[str, Any]:
    return row._asdict()


def list_files(
    session: Session,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    site: str | None = None,
    node: str | None = None,
    item: str | None = None,
    mime: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page:
    """File records in id order, by content hash, site, node, item (key), MIME type (or a
    ``type/`` prefix) and time recorded (``since`` inclusive, ``until`` exclusive)."""
    read_only(session)
    statement = _file_select().where(FILES.c.id > _after_id(cursor)).order_by(FILES.c.id).limit(limit + 1)
    if sha256 is not None:
        statement = statement.where(FILES.c.sha256 == sha256.lower())
    if md5 is not None:
        statement = statement.where(FILES.c.md5 == md5.lower())
    if site is not None:
        statement = statement.where(TASKS.c.site == site)
    if node is not None:
        client_id = session.scalar(select(KEYS.c.id).where(KEYS.c.name == node))
        statement = statement.where(FILES.c.client_id == (client_id if client_id is not None else -1))
    if item is not None:
        item_id = session.scalar(select(ITEMS.c.id).where(ITEMS.c.key == item))
        found_by = select(LINKS.c.task_id).where(LINKS.c.item_id == (item_id if item_id is not None else -1))
        statement = statement.where(FILES.c.task_id.in_(found_by))
    if mime is not None:
        statement = statement.where(
            FILES.c.mime.like(_like(mime)[1:], escape="\\") if mime.endswith("/") else FILES.c.mime == mime
        )
    if since is not None:
        statement = statement.where(FILES.c.created_at >= since)
    if until is not None:
        statement = statement.where(FILES.c.created_at < until)
    rows = [_file_row(row) for row in session.execute(statement)]
    session.commit()
    return _page(rows, limit)


def get_file(session: Session, file_id: int) -> dict[str, Any]:
    read_only(session)
    row = session.execute(_file_select().where(FILES.c.id == file_id)).one_or_none()
    session.commit()
    if row is None:
        raise NotFound(f"no file {file_id}")
    return _file_row(row)


def files_by_id(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    rows = session.execute(_file_select().where(FILES.c.id.in_(ids))).all()
    return {row.id: _file_row(row) for row in rows}


# ------------------------------------------------------------ exact duplicates


def exact_duplicates(session: Session, *, limit: int = 50, cursor: str | None = None) -> Page:
    """Content recorded more than once (same sha256), the most wasted bytes first; each
    group with every file that holds it."""
    wasted_after, sha_after = _group_cursor(cursor)
    copies = func.count(FILES.c.id)
    size = func.max(FILES.c.size)
    wasted = ((copies - 1) * size).label("wasted")
    groups = (
        select(FILES.c.sha256, copies.label("copies"), size.label("size"), wasted)
        .group_by(FILES.c.sha256)
        .having(copies > 1)
        .subquery()
    )
    statement = select(groups).order_by(groups.c.wasted.desc(), groups.c.sha256).limit(limit + 1)
    if wasted_after is not None:
        statement = statement.where(
            or_(groups.c.wasted < wasted_after, and_(groups.c.wasted == wasted_after, groups.c.sha256 > sha_after))
        )
    read_only(session)
    rows = [row._asdict() for row in session.execute(statement)]
    page_rows = rows[:limit]
    members: dict[str, list[dict[str, Any]]] = {row["sha256"]: [] for row in page_rows}
    if members:
        for row in session.execute(_file_select().where(FILES.c.sha256.in_(list(members))).order_by(FILES.c.id)):
            members[row.sha256].append(_file_row(row))
    session.commit()
    for row in page_rows:
        row["wasted"] = int(row["wasted"])
        row["files"] = members[row["sha256"]]
    last = page_rows[-1] if page_rows else None
    next_cursor = f"{last['wasted']}:{last['sha256']}" if len(rows) > limit and last else None
    return Page(page_rows, next_cursor)


def _group_cursor(cursor: str | None) -> tuple[int | None, str | None]:
    if not cursor:
        return None, None
    wasted, _, sha = cursor.partition(":")
    number = _cursor_number(wasted)
    if number is None or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InvalidInput.at(["cursor"], "not a cursor this endpoint gave out", location="query")
    return number, sha


# ------------------------------------------------------------- near duplicates


def similar_files(
    session: Session, index: HashIndex, *, value: int, distance: int, limit: int = 100, exclude: int | None = None
) -> list[dict[str, Any]]:
    """Files whose hash is within ``distance`` of ``value``, nearest first, each with its
    distance (``exclude``: a file not to list, the one asked about)."""
    _check_distance(distance)
    index.ensure_fresh(session)
    matches: list[Match] = [m for m in index.search(value, distance, limit + 1) if m.file_id != exclude][:limit]
    read_only(session)
    rows = files_by_id(session, [m.file_id for m in matches])
    session.commit()
    return [{**rows[m.file_id], "distance": m.distance} for m in matches if m.file_id in rows]


def hash_of_file(session: Session, file_id: int, column: str) -> int:
    """A file's perceptual hash, to search by ``?file=``."""
    read_only(session)
    row = session.execute(select(FILES.c.id, FILES.c[column]).where(FILES.c.id == file_id)).one_or_none()
    session.commit()
    if row is None:
        raise NotFound(f"no file {file_id}")
    if row[1] is None:
        raise InvalidInput.at(["file"], f"file {file_id} has no {column} (not an image)", location="query")
    return int(row[1], 16)


def similar_clusters(
    session: Session, index: HashIndex, *, distance: int, limit: int = 50, cursor: str | None = None
) -> Page:
    """Groups of near-duplicate files, by their smallest file id (see ``similar.clusters``)."""
    _check_distance(distance)
    index.ensure_fresh(session)
    found, next_after = clusters(index, distance, after_id=_after_id(cursor), limit=limit)
    read_only(session)
    rows = files_by_id(session, sorted({file_id for cluster in found for file_id, _ in cluster}))
    session.commit()
    groups = [
        {
            "first": cluster[0][0],
            "files": [{**rows[file_id], "distance": d} for file_id, d in cluster if file_id in rows],
        }
        for cluster in found
    ]
    return Page(groups, str(next_after) if next_after is not None else None)


def _check_distance(distance: int) -> None:
    if not 0 <= distance <= MAX_DISTANCE:
        raise InvalidInput.at(["distance"], f"must be from 0 to {MAX_DISTANCE}", location="query")
