"""The vocabulary of the wire protocol: task kinds, states, result statuses and failure classes.

Kept as ``str`` enums so values serialize to JSON and compare to plain strings.
"""

from enum import StrEnum


class TaskKind(StrEnum):
    METADATA = "metadata"  # find what exists for an inventory item on one site
    DOWNLOAD = "download"  # fetch one found post / file / video of one site


class TaskState(StrEnum):
    QUEUED = "queued"  # waiting; may carry an available_at in the future (backoff, cooldown)
    #: waiting for a time (a subscription's next check), outside the queue: the next lease
    #: request after ``available_at`` queues it
    SCHEDULED = "scheduled"
    #: its item or site is paused: never leased until resumed
    PAUSED = "paused"
    LEASED = "leased"  # held by exactly one live lease
    DONE = "done"
    NOT_FOUND = "not_found"  # metadata only: nothing found after the last attempt
    DEAD = "dead"  # permanent failure or out of attempts; listed in reports
    #: download only: the archive already holds its file (the post's md5 / sha256 named
    #: one); never leased, no request to the site. ``duplicate_of`` names the file.
    DUPLICATE = "duplicate"


class ItemState(StrEnum):
    PENDING = "pending"  # some metadata task still queued or leased
    FOUND = "found"  # at least one site found something
    NOT_FOUND = "not_found"  # every site gave up finding it
    FAILED = "failed"  # nothing found and at least one site failed for good


class LeaseState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"  # every task got a result
    RELEASED = "released"  # handed back by the client
    EXPIRED = "expired"  # reclaimed: its unfinished tasks went back to the queue


class ResultStatus(StrEnum):
    DONE = "done"  # a download's files, or a resolution's found posts (perhaps none)
    FAILED = "failed"  # with a failure class


class FailureClass(StrEnum):
    PERMANENT = "permanent"  # 404, unsupported URL, no extractor: retrying cannot help
    RATE_LIMITED = "rate_limited"  # 429: the whole site cools down for every client
    TRANSIENT = "transient"  # 5xx, network: retry with backoff until max attempts
