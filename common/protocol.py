"""What the coordinator and its nodes exchange, declared once: the shapes of a leased task,
a result, a file record and a found post, the statuses they carry and the batch limits.
The coordinator's schemas (``server/schemas.py``, which also make ``/openapi.json``) and
the client build from these; the vocabulary itself is in ``common.states``.

On the wire a post's metadata is ``metadata`` (the coordinator's column is ``payload``).
"""

from __future__ import annotations

import re
from typing import Any, NotRequired, TypedDict

from .states import FailureClass, LeaseState, ResultStatus, TaskKind
from .video import VideoOrder

__all__ = [
    "ENDED_LEASE_STATES",
    "MAX_BATCH",
    "MIN_BATCH",
    "UNSTORABLE_TEXT",
    "CheckOrder",
    "DoneDownload",
    "DoneMetadata",
    "FailedResult",
    "FailureClass",
    "FileRecord",
    "FoundPost",
    "LeaseState",
    "LeasedTask",
    "Result",
    "ResultStatus",
    "TaskKind",
    "VideoInfo",
    "VideoOrder",
]

#: Text no database stores: NUL (PostgreSQL text cannot hold it) and unpaired surrogates
#: (not encodable as UTF-8). Nodes strip it from a site's words; the coordinator refuses
#: it from users and strips it from a site's words a node reports.
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")

#: Tasks one lease may hold: a node asks for ``n`` in this range.
MIN_BATCH, MAX_BATCH = 1, 100
#: Lease states after which a heartbeat has nothing to keep alive (all results arrived,
#: or the node handed its tasks back): not a lost lease.
ENDED_LEASE_STATES = frozenset({LeaseState.COMPLETED, LeaseState.RELEASED})


class ItemRef(TypedDict):
    id: int
    key: str
    title: str | None
    query: str | None
    url: str | None
    extra: dict[str, Any]


class LeasedTask(TypedDict):
    id: int
    kind: str
    site: str
    url: str
    remote_id: str | None
    priority: int
    attempts: int
    #: Download tasks: the post's metadata as found.
    metadata: dict[str, Any] | None
    #: Metadata tasks: the inventory item.
    item: NotRequired[ItemRef | None]
    #: Metadata tasks of a subscription: which check this is, and where it may stop.
    check: NotRequired[CheckOrder]
    #: Download tasks of a yt-dlp site: format, container, limits (``common.video``).
    video: NotRequired[VideoOrder]


class CheckOrder(TypedDict):
    """A subscription's check: a re-check that is not ``full`` stops enumerating (newest
    first) after ``stop_after_known`` posts in a row that are in ``known_ids``; a node
    must not answer a re-check from a cache."""

    number: int
    full: bool
    stop_after_known: int | None
    known_ids: list[str]


class FileRecord(TypedDict):
    """A file a node downloaded, relative to its ``--dest``."""

    path: str
    size: int
    sha256: str
    #: Since 0.2 (older nodes leave it out).
    md5: NotRequired[str | None]
    mime: str | None
    phash: str | None
    dhash: str | None
    #: Since 0.3, with a file store: its object, ``<prefix>/sha256/ab/cd/<sha256>``.
    store_key: NotRequired[str]
    #: Since 0.3: False when the node removed its copy after a verified upload.
    kept: NotRequired[bool]
    #: Since 0.5, video and audio files: what a probe of the written file found.
    video: NotRequired[VideoInfo]


class VideoInfo(TypedDict):
    """A video or audio file as probed (ffprobe): None where it has no such stream."""

    duration: float | None  # seconds
    width: int | None
    height: int | None
    vcodec: str | None
    acodec: str | None
    container: str | None


class FoundPost(TypedDict):
    site: str
    remote_id: str
    #: Left out when the site's ``post_url`` names the download URL.
    url: NotRequired[str]
    metadata: dict[str, Any]


class DoneDownload(TypedDict):
    task_id: int
    status: str  # ResultStatus.DONE
    files: list[FileRecord]
    #: Since 0.4: the node held these files from an earlier run and fetched nothing
    #: (the coordinator's event says ``file.skipped``, not ``file.downloaded``).
    already_on_node: NotRequired[bool]


class DoneMetadata(TypedDict):
    task_id: int
    status: str  # ResultStatus.DONE
    #: What exists; empty: nothing found (retried with backoff).
    found: list[FoundPost]
    #: A re-check that stopped at posts the archive has (``CheckOrder``).
    stopped_at_known: NotRequired[bool]


class FailedResult(TypedDict):
    task_id: int
    status: str  # ResultStatus.FAILED
    error_class: str  # FailureClass
    error: str
    #: rate_limited: seconds the site asked to wait.
    retry_after: NotRequired[float]


Result = DoneDownload | DoneMetadata | FailedResult
