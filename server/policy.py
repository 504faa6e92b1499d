"""How long leases last, how often a task is tried, and how long it waits in between:
the numbers of the queue, from the coordinator's settings, per task kind where they differ."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from common.states import TaskKind

from .schedule import parse_interval

#: Leases reclaimed per call: bounds the work a single lease request can be charged with.
RECLAIM_BATCH = 1000
#: Due subscriptions queued per lease request, likewise.
PROMOTE_BATCH = 1000


@dataclass(frozen=True)
class LeasePolicy:
    """Timeouts, attempts and backoff, per task kind where they differ."""

    lease_seconds: Mapping[str, int]
    max_lease_seconds: int
    max_attempts: Mapping[str, int]
    retry_backoff: int
    retry_backoff_max: int
    not_found_backoff: int
    not_found_backoff_max: int
    default_retry_after: int
    max_retry_after: int
    empty_queue_retry_after: int
    #: Subscriptions: the interval of items and sites that name none (None: once), how many
    #: known posts in a row end a re-check, and every how many checks one goes to the end.
    check_every: int | None = None
    stop_after_known: int = 20
    full_check_every: int = 10

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LeasePolicy:
        return cls(
            lease_seconds={
                TaskKind.METADATA: config["METADATA_LEASE_SECONDS"],
                TaskKind.DOWNLOAD: config["DOWNLOAD_LEASE_SECONDS"],
            },
            max_lease_seconds=config["MAX_LEASE_SECONDS"],
            max_attempts={
                TaskKind.METADATA: config["METADATA_MAX_ATTEMPTS"],
                TaskKind.DOWNLOAD: config["DOWNLOAD_MAX_ATTEMPTS"],
            },
            retry_backoff=config["RETRY_BACKOFF_SECONDS"],
            retry_backoff_max=config["RETRY_BACKOFF_MAX_SECONDS"],
            not_found_backoff=config["NOT_FOUND_BACKOFF_SECONDS"],
            not_found_backoff_max=config["NOT_FOUND_BACKOFF_MAX_SECONDS"],
            default_retry_after=config["DEFAULT_RETRY_AFTER_SECONDS"],
            max_retry_after=config["MAX_RETRY_AFTER_SECONDS"],
            empty_queue_retry_after=config["EMPTY_QUEUE_RETRY_AFTER_SECONDS"],
            check_every=parse_interval(config["CHECK_EVERY"]),
            stop_after_known=config["STOP_AFTER_KNOWN"],
            full_check_every=config["FULL_CHECK_EVERY"],
        )

    def lease_length(self, kind: str, requested: int | None) -> timedelta:
        seconds = self.lease_seconds[kind] if requested is None else requested
        return timedelta(seconds=max(1, min(seconds, self.max_lease_seconds)))

    def retry_delay(self, attempts: int) -> timedelta:
        """Exponential: base, 2 base, 4 base, ... capped."""
        return timedelta(seconds=min(self.retry_backoff * 2 ** max(attempts - 1, 0), self.retry_backoff_max))

    def not_found_delay(self, attempts: int) -> timedelta:
        seconds = self.not_found_backoff * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(seconds, self.not_found_backoff_max))

    def cooldown(self, retry_after: float | None) -> timedelta:
        seconds = self.default_retry_after if retry_after is None else retry_after
        return timedelta(seconds=max(1.0, min(float(seconds), self.max_retry_after)))
