"""Coordinator settings: every default in one place, each with the reason for its value."""

from __future__ import annotations

from typing import Any

from common.settings import ConfigError

DEFAULTS: dict[str, Any] = {
    # SQLAlchemy URL. SQLite (WAL) is the embedded default; PostgreSQL
    # (postgresql+psycopg://...) lets several coordinator processes share one store.
    "DATABASE_URL": "sqlite:///var/fetchfleet.sqlite3",
    # Sites the coordinator hands out work for; see config.py.example for the shape.
    "SITES": {},
    # How long a lease lives before its tasks go back to the queue (heartbeats extend it).
    "METADATA_LEASE_SECONDS": 3600,
    "DOWNLOAD_LEASE_SECONDS": 3600,
    # Upper bound for a lease length a client asks for, so a typo cannot park work for weeks.
    "MAX_LEASE_SECONDS": 6 * 3600,
    # Unsuccessful tries (transient failures, expired leases, not found) before a task gives up.
    "METADATA_MAX_ATTEMPTS": 5,
    "DOWNLOAD_MAX_ATTEMPTS": 5,
    # Transient failure n waits RETRY_BACKOFF_SECONDS * 2**(n-1), at most the max.
    "RETRY_BACKOFF_SECONDS": 60,
    "RETRY_BACKOFF_MAX_SECONDS": 6 * 3600,
    # Not-found n waits NOT_FOUND_BACKOFF_SECONDS * 2**(n-1): new posts appear slowly.
    "NOT_FOUND_BACKOFF_SECONDS": 3600,
    "NOT_FOUND_BACKOFF_MAX_SECONDS": 7 * 86400,
    # A 429 without Retry-After cools the site down this long; longer requests are capped.
    "DEFAULT_RETRY_AFTER_SECONDS": 300,
    "MAX_RETRY_AFTER_SECONDS": 86400,
    # Hint sent to clients when nothing is available right now.
    "EMPTY_QUEUE_RETRY_AFTER_SECONDS": 30,
    # Clients older than this (PEP 440 version) are refused; None accepts any.
    "MIN_CLIENT_VERSION": None,
    # GET /stats, /metrics and the dashboard's data are public unless this is true.
    "STATS_REQUIRE_KEY": False,
    # How often /dashboard refreshes itself; its snapshot is shared this long by every viewer.
    "DASHBOARD_REFRESH_SECONDS": 5,
    # Largest request body for JSON endpoints; inventory uploads have their own limit.
    "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,
    "MAX_INVENTORY_UPLOAD_BYTES": 2 * 1024 * 1024 * 1024,
    # Inventory rows per import transaction: bounds memory and how long a writer holds SQLite.
    "IMPORT_CHUNK_ROWS": 5000,
    # Largest anchor file (CSV or gallery-dl archive) POST /known takes; the CLI has no limit.
    "MAX_KNOWN_UPLOAD_BYTES": 1024 * 1024 * 1024,
    # Subscriptions: how often an item is checked again when neither it (the inventory's
    # check_every column) nor its site names an interval: seconds or "30m", "6h", "1d";
    # None checks once.
    "CHECK_EVERY": None,
    # A re-check stops after this many posts in a row the item already has (newest first)...
    "STOP_AFTER_KNOWN": 20,
    # ...except every FULL_CHECK_EVERY-th check, which goes to the end (and finds deletions).
    "FULL_CHECK_EVERY": 10,
    # Reverse image search: a process reads files recorded elsewhere (other workers, other
    # hosts) at most this many seconds before answering.
    "SIMILAR_REFRESH_SECONDS": 1.0,
    # The central file store the nodes upload into (see the nodes' settings of the same
    # names): the coordinator reads from it for GET /files/<id>/content and files fetch,
    # with this host's own credentials (boto3's usual environment or ~/.aws/credentials).
    "FILE_STORE": None,
    "FILE_STORE_ENDPOINT": None,
    "FILE_STORE_REGION": None,
    # GET /files/<id>/content: "redirect" to a presigned URL of the store (callers reach
    # the store themselves), or "stream" the bytes through the coordinator (they cannot).
    "FILE_STORE_SERVE": "redirect",
    # How long a presigned URL stays valid.
    "FILE_STORE_URL_SECONDS": 300,
    # Events (file.downloaded, item.synchronized, task.dead...): written to an outbox in
    # the transaction that caused them once a destination is set, and delivered by
    # `flask --app server events run`. RabbitMQ: an amqp:// URL, and a topic exchange
    # (declared durable; the routing key is the event type).
    "EVENTS_AMQP_URL": None,
    "EVENTS_AMQP_EXCHANGE": "fetchfleet",
    # Webhooks: [{"url": "https://...", "secret": "...", "types": ["file.downloaded"]}]
    # ("types" optional: every type). Each POST carries an HMAC-SHA256 of its body.
    "EVENTS_WEBHOOKS": [],
    # Delivered events stay this long in the outbox (for `events status` and replays).
    "EVENTS_KEEP_DAYS": 7,
}

_POSITIVE_INTS = (
    "METADATA_LEASE_SECONDS",
    "DOWNLOAD_LEASE_SECONDS",
    "MAX_LEASE_SECONDS",
    "METADATA_MAX_ATTEMPTS",
    "DOWNLOAD_MAX_ATTEMPTS",
    "RETRY_BACKOFF_SECONDS",
    "RETRY_BACKOFF_MAX_SECONDS",
    "NOT_FOUND_BACKOFF_SECONDS",
    "NOT_FOUND_BACKOFF_MAX_SECONDS",
    "DEFAULT_RETRY_AFTER_SECONDS",
    "MAX_RETRY_AFTER_SECONDS",
    "EMPTY_QUEUE_RETRY_AFTER_SECONDS",
    "IMPORT_CHUNK_ROWS",
    "MAX_KNOWN_UPLOAD_BYTES",
    "STOP_AFTER_KNOWN",
    "FULL_CHECK_EVERY",
    "FILE_STORE_URL_SECONDS",
    "EVENTS_KEEP_DAYS",
)


def validate(settings: dict[str, Any]) -> None:
    """Fail at start-up, naming the setting, rather than deep inside a request."""
    for name in _POSITIVE_INTS:
        value = settings.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    from .schedule import parse_interval

    try:
        parse_interval(settings.get("CHECK_EVERY"))
    except ValueError as problem:
        raise ConfigError(f"CHECK_EVERY {problem}") from None
    every = settings.get("DASHBOARD_REFRESH_SECONDS")
    if isinstance(every, bool) or not isinstance(every, int | float) or not 0.5 <= every <= 3600:
        raise ConfigError(f"DASHBOARD_REFRESH_SECONDS must be a number of seconds from 0.5 to 3600, got {every!r}")
    refresh = settings.get("SIMILAR_REFRESH_SECONDS")
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not 0 <= refresh <= 3600:
        raise ConfigError(f"SIMILAR_REFRESH_SECONDS must be a number of seconds from 0 to 3600, got {refresh!r}")
    from common.file_store import parse_config

    parse_config(settings)
    if settings.get("FILE_STORE_SERVE") not in ("redirect", "stream"):
        raise ConfigError(f"FILE_STORE_SERVE must be 'redirect' or 'stream', got {settings.get('FILE_STORE_SERVE')!r}")
    from .event_sender import destinations_from_config

    destinations_from_config(settings)
    if not isinstance(settings.get("DATABASE_URL"), str) or not settings["DATABASE_URL"]:
        raise ConfigError("DATABASE_URL must be a SQLAlchemy database URL")
    minimum = settings.get("MIN_CLIENT_VERSION")
    if minimum is not None:
        from packaging.version import InvalidVersion, Version

        try:
            Version(str(minimum))
        except InvalidVersion:
            raise ConfigError(f"MIN_CLIENT_VERSION is not a version: {minimum!r}") from None
