"""The central file store as the coordinator sees it: where a file's bytes can be read
(a presigned URL, or the bytes themselves), and what nodes say they moved into it.

The coordinator never writes objects: nodes upload, content-addressed (``common.file_store``).
It reads with its own credentials, and only when ``FILE_STORE`` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from common.file_store import FileStore, StoreError, StoreUnavailable, is_object_key, parse_config

from .auth import Client
from .catalogue import get_file
from .errors import InvalidInput, NotFound, Unavailable
from .models import File

_opening = threading.Lock()
FILES = File.__table__


def store() -> FileStore | None:
    """This process's client of the configured store (None when there is none)."""
    extensions = current_app.extensions["fetchfleet"]
    with _opening:
        if "file_store" not in extensions:
            config = parse_config(current_app.config)
            extensions["file_store"] = FileStore(config) if config is not None else None
        return extensions["file_store"]


@dataclass
class Content:
    """Where one file's bytes are, and what to call them."""

    file: dict[str, Any]
    key: str
    filename: str


def locate(session: Session, file_id: int) -> Content:
    """The store object of a file record; 404 when there is no such file or it is not in
    the store (only on its node), 503 when the coordinator has no store configured."""
    record = get_file(session, file_id)
    if not record.get("store_key"):
        where = f"only on node {record['node']!r} at {record['path']}" if record.get("on_node") else "nowhere"
        raise NotFound(f"file {file_id} is not in the file store: it is {where}")
    if store() is None:
        raise Unavailable("this coordinator has no file store configured (FILE_STORE)")
    return Content(record, record["store_key"], record["path"].rsplit("/", 1)[-1])


def presigned_url(content: Content) -> str:
    seconds = current_app.config["FILE_STORE_URL_SECONDS"]
    return store().presigned_url(content.key, seconds, filename=content.filename)


def stream(content: Content) -> tuple[Iterator[bytes], int]:
    """The object's bytes (the store's answer is checked before the first byte goes out)."""
    try:
        return store().open(content.key)
    except StoreUnavailable as error:
        raise Unavailable(str(error)) from None
    except StoreError as error:
        raise NotFound(str(error)) from None


def record_stored(session: Session, client: Client, records: list[dict[str, Any]]) -> dict[str, int]:
    """A node moved files it reported earlier into the store (``store upload-existing``):
    record each one's object, and whether the node still keeps it. Only the caller's own
    file records change; ones it never reported are counted ``unknown``."""
    for number, record in enumerate(records):
        if not is_object_key(record["store_key"], record["sha256"].lower()):
            raise InvalidInput.at(["files", number, "store_key"], "is not the object of this sha256")
    statement = (
        update(FILES)
        .where(
            FILES.c.task_id == bindparam("b_task"),
            FILES.c.client_id == client.id,
            FILES.c.path == bindparam("b_path"),
            FILES.c.sha256 == bindparam("b_sha256"),
        )
        .values(store_key=bindparam("b_key"), on_node=bindparam("b_kept"))
    )
    recorded = 0
    for record in records:  # one row each, through the (task, client, path) unique index
        result = session.execute(
            statement,
            {
                "b_task": record["task_id"],
                "b_path": record["path"],
                "b_sha256": record["sha256"].lower(),
                "b_key": record["store_key"],
                "b_kept": record.get("kept", True),
            },
        )
        recorded += result.rowcount
    session.commit()
    return {"recorded": recorded, "unknown": len(records) - recorded}
