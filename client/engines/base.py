"""The shape every engine has, and the failure classification they share.

A worker process builds each engine once (``configure``) and then runs one job at a
time: ``resolve`` lists what exists at a URL without downloading files; ``download``
fetches a task's files and says which files it wrote. Both raise ``Failure`` with a
class the coordinator understands: permanent, rate_limited (with Retry-After) or
transient.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import errno
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.protocol import UNSTORABLE_TEXT, FailedResult, FoundPost
from common.sites import is_fetched_url
from common.states import FailureClass, ResultStatus

PERMANENT_STATUSES = {400, 401, 403, 404, 405, 410, 451}


class Failure(Exception):
    """A job failed in a way the coordinator should know how to retry (or not)."""

    def __init__(self, error_class: str | FailureClass, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.error_class = FailureClass(error_class)
        self.message = clean_text(message)[:2000]
        self.retry_after = retry_after

    def as_result(self, task_id: int) -> FailedResult:
        result = {
            "task_id": task_id,
            "status": ResultStatus.FAILED,
            "error_class": self.error_class.value,
            "error": self.message,
        }
        if self.retry_after is not None:
            result["retry_after"] = self.retry_after
        return result


#: Errors of the node's own disk: no task is at fault, and no other task would fare better.
NODE_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system"}
_NODE_ERROR_TEXT = re.compile(
    r"\[Errno (?P<errno>" + "|".join(map(str, NODE_ERRNOS)) + r")\]"
    r"|No space left on device|Disk quota exceeded|Read-only file system"
)


class NodeFault(Exception):
    """The node cannot store files (disk full, quota, read-only ``--dest``): not the task's
    fault. The task is handed back uncharged and the node pauses until the disk recovers."""


def node_fault_of(error: BaseException | str | None) -> NodeFault | None:
    """A NodeFault when ``error`` (an exception, its causes, or a message) is a disk condition."""
    seen: set[int] = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NODE_ERRNOS:
            return NodeFault(f"{NODE_ERRNOS[error.errno]}: {error}")
        error = error.__cause__ or error.__context__ or (error.args[0] if error.args else None)
    if isinstance(error, str) and (match := _NODE_ERROR_TEXT.search(error)):
        number = match.group("errno")
        reason = NODE_ERRNOS[int(number)] if number else match.group(0).lower()
        return NodeFault(f"{reason}: {error[:300]}")
    return None


def within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path``, symlinks resolved, is ``root`` or inside it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


@dataclass(frozen=True)
class Found:
    """One post / video that exists on a site (a future download task)."""

    remote_id: str
    url: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_wire(self, site: str) -> FoundPost:
        """A found post as the coordinator takes it; a URL this node would not fetch
        (``ytdl:``, ``text:``, ``file:``) is left out, for the site's ``post_url`` to name it."""
        wire = {"site": site, "remote_id": self.remote_id, "metadata": self.metadata}
        if is_fetched_url(self.url):
            wire["url"] = self.url
        return wire


@dataclass(frozen=True)
class StopAtKnown:
    """A re-check's order: stop enumerating (newest first) after ``after`` posts in a row
    that are ``known``; what follows them is known too."""

    known: frozenset[str]
    after: int

    @classmethod
    def from_check(cls, check: Mapping[str, Any] | None) -> StopAtKnown | None:
        if not check or not check.get("stop_after_known") or not check.get("known_ids"):
            return None
        return cls(frozenset(str(remote_id) for remote_id in check["known_ids"]), int(check["stop_after_known"]))


class KnownRun:
    """Counts known posts in a row while an engine enumerates; says when to stop."""

    def __init__(self, rule: StopAtKnown | None):
        self.rule = rule
        self.in_a_row = 0
        self.seen: set[str] = set()
        self.stopped = False

    def saw(self, remote_id: str) -> bool:
        """Note a post (each counts once); True when the enumeration should stop here."""
        if self.rule is None or remote_id in self.seen:
            return False
        self.seen.add(remote_id)
        self.in_a_row = self.in_a_row + 1 if remote_id in self.rule.known else 0
        self.stopped = self.in_a_row >= self.rule.after
        return self.stopped


@dataclass
class Resolution:
    """What a resolution found, and whether it stopped early at known posts."""

    found: list[Found]
    stopped_at_known: bool = False


@dataclass(frozen=True)
class Written:
    """A file a download job left on disk (complete: never a ``.part``), with its metadata."""

    path: Path
    metadata: dict[str, Any]


class Engine:
    name = ""

    def __init__(self, settings: Mapping[str, Any], sites: Mapping[str, Mapping[str, Any]]):
        #: Client settings (GALLERY_DL_CONFIG, YT_DLP_OPTIONS, ...) and {site: {engine, options}},
        #: the options already vetted by ``client.trust``.
        self.settings = settings
        self.sites = {name: site for name, site in sites.items() if site.get("engine") == self.name}

    def resolve(self, url: str, site: str, stop: StopAtKnown | None = None) -> Resolution:
        """What exists at ``url``; an engine that can stop early honours ``stop``."""
        raise NotImplementedError

    def download(
        self, url: str, site: str, directory: Path, partial: Path, task: Mapping[str, Any] | None = None
    ) -> list[Written]:
        """Fetch into ``directory``, keeping unfinished files in ``partial`` (removed by the
        caller afterwards); nothing may be written outside the two. ``task``: the leased
        task (its found metadata, a video order), for engines that use them."""
        raise NotImplementedError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        seconds = (moment - dt.datetime.now(dt.UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def classify_http(responses: Iterable[tuple[int, str, str | None]]) -> Failure | None:
    """The failure that a job's HTTP error responses add up to, worst first.

    429 anywhere: the site is rate limiting us (cool the site down, with its
    Retry-After). Any 5xx: transient. Otherwise 404 and friends: permanent.
    """
    errors = [(status, url, retry_after) for status, url, retry_after in responses if status >= 400]
    if not errors:
        return None
    throttled = [item for item in errors if item[0] == 429]
    if throttled:
        waits = [seconds for _, _, header in throttled if (seconds := parse_retry_after(header)) is not None]
        status, url, _ = throttled[-1]
        return Failure(FailureClass.RATE_LIMITED, f"HTTP 429 for {url}", max(waits) if waits else None)
    server = [item for item in errors if item[0] >= 500]
    if server:
        status, url, _ = server[-1]
        return Failure(FailureClass.TRANSIENT, f"HTTP {status} for {url}")
    status, url, _ = errors[-1]
    error_class = FailureClass.PERMANENT if status in PERMANENT_STATUSES else FailureClass.TRANSIENT
    return Failure(error_class, f"HTTP {status} for {url}")


def clean_text(text: str) -> str:
    """A site's text as every database stores it: no NUL, no unpaired surrogate."""
    return UNSTORABLE_TEXT.sub("", text) if UNSTORABLE_TEXT.search(text) else text


def json_safe(data: Mapping[str, Any], max_string: int = 20_000) -> dict[str, Any]:
    """Metadata as JSON can carry it: private (``_``) keys dropped, odd values as text,
    text storable (``clean_text``), at most eight levels deep."""

    def convert(value: Any, depth: int = 0) -> Any:
        if depth > 8:
            return clean_text(str(value)[:max_string])
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, str):
            return clean_text(value[:max_string])
        if isinstance(value, Mapping):
            return {clean_text(str(k)): convert(v, depth + 1) for k, v in value.items() if not str(k).startswith("_")}
        if isinstance(value, list | tuple | set):
            return [convert(v, depth + 1) for v in value]
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        return clean_text(str(value)[:max_string])

    converted = convert(data)
    json.dumps(converted)  # guaranteed serializable from here on
    return converted
