"""Events: what happened, for the operator's other tools (a RabbitMQ consumer, a webhook).

Every event is written to the outbox (the ``events`` table) in the transaction of the
change it reports, so an event exists exactly when its change was committed; ``flask
--app server events run`` (``event_sender``) delivers it afterwards, at least once. The
coordinator writes events only when a destination is configured (``Outbox.enabled``):
without one, the hot path pays nothing.

Bodies carry names and numbers only (site, item key, task id, remote id, node, path or
store key, sha256, size), never a key or a credential.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .database import insert_rows, prepare_rows
from .models import Event, Item


class EventType(StrEnum):
    FILE_DOWNLOADED = "file.downloaded"
    #: A found post that was not fetched: an anchor names it (``known``), the archive
    #: already holds its file by hash (``duplicate``), or the node that did it held its
    #: files from an earlier run (``on_node``).
    FILE_SKIPPED = "file.skipped"
    #: Every post an item found is done, dead or a duplicate (again, after a re-check
    #: that found more).
    ITEM_SYNCHRONIZED = "item.synchronized"
    TASK_DEAD = "task.dead"
    SITE_COOLDOWN = "site.cooldown"
    POST_GONE_UPSTREAM = "post.gone_upstream"


EVENTS = Event.__table__


@dataclass(frozen=True)
class Outbox:
    """Where the domain functions write their events; a disabled one writes nothing."""

    enabled: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Outbox:
        return cls(enabled=bool(config.get("EVENTS_AMQP_URL") or config.get("EVENTS_WEBHOOKS")))

    def add(self, session: Session, type_: EventType, bodies: Iterable[dict[str, Any]], now: datetime) -> int:
        """Write events of one type in the caller's transaction; returns how many."""
        if not self.enabled:
            return 0
        rows = [{"type": str(type_), "created_at": now, "body": body} for body in bodies]
        insert_rows(session, prepare_rows(session, EVENTS, rows))  # one driver call, as file records
        return len(rows)


#: The outbox of callers that configure none (tests, benchmarks, the CLI without events).
NO_EVENTS = Outbox(enabled=False)


def item_keys(session: Session, item_ids: Iterable[int | None]) -> dict[int, str]:
    """The inventory keys of items, which consumers know them by."""
    ids = sorted({item_id for item_id in item_ids if item_id is not None})
    if not ids:
        return {}
    return dict(session.execute(select(Item.id, Item.key).where(Item.id.in_(ids))).all())


def task_body(task: Any, keys: Mapping[int, str]) -> dict[str, Any]:
    """What every task-shaped event says about its task."""
    return {
        "task_id": task.id,
        "kind": task.kind,
        "site": task.site,
        "remote_id": task.remote_id,
        "item_key": keys.get(task.item_id),
    }


def file_bodies(
    tasks: Sequence[Any], files: Sequence[Mapping[str, Any]], node: str, keys: Mapping[int, str]
) -> list[dict[str, Any]]:
    """One body per file record of the done downloads ``tasks``."""
    by_id = {task.id: task for task in tasks}
    bodies = []
    for record in files:
        task = by_id.get(record["task_id"])
        if task is None:
            continue
        bodies.append(
            task_body(task, keys)
            | {
                "node": node,
                "path": record["path"],
                "store_key": record.get("store_key"),
                "sha256": record["sha256"],
                "size": record["size"],
                "mime": record.get("mime"),
            }
        )
    return bodies


def event_message(event_id: int, type_: str, created_at: datetime, body: Mapping[str, Any]) -> dict[str, Any]:
    """An event as every destination receives it (the AMQP message body, the webhook's
    POST body): the same shape everywhere."""
    return {"id": event_id, "type": type_, "time": created_at.isoformat(), "body": dict(body)}
