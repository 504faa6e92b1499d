"""API keys: creation, lookup by hash, roles, and the client version gate.

Keys are 256-bit random tokens, so a fast hash (sha256) is enough to store them: a
password hash would cost ~100 ms per request for no gain.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app, g, request
from flask_smorest import Blueprint
from packaging.version import InvalidVersion, Version
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.version import CLIENT_VERSION_HEADER

from .database import read_only, utcnow
from .errors import ClientTooOld, Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from .extensions import db
from .models import ApiKey, Role

KEY_PREFIX = "ff_"
#: Writing last_seen on every request would make every read a write; once a minute is plenty.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)
SECURITY_DOC = [{"bearerAuth": []}]
#: A client version as recorded (anything else in the header is not stored).
_VERSION_TEXT = re.compile(r"[0-9A-Za-z.+!_-]{1,32}")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, name: str, role: Role = Role.CLIENT) -> str:
    """Store a new key for ``name`` and return the key itself (shown once, stored hashed)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput.at(["name"], "a key name is 1 to 100 characters", location="cli")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict(f"a key named {name!r} already exists; revoke it first or pick another name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_hash=hash_key(key), role=Role(role)))
    session.commit()
    return key


def revoke_key(session: Session, name: str) -> None:
    api_key = session.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
    if api_key is None:
        raise NotFound(f"no active key named {name!r}")
    api_key.revoked_at = utcnow()
    session.commit()
    key_cache.forget(_database(session), name)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))


@dataclass(frozen=True)
class Client:
    """A key's holder (a client node, or an operator's admin key): what the views and the
    domain need of it. The same word as the tables' ``client_id`` and ``/stats``' clients."""

    id: int
    name: str
    role: str
    client_version: str | None
    revoked: bool


class KeyCache:
    """Keys looked up in the last few seconds, per process: without it every request
    pays a read transaction (two round trips on PostgreSQL). A revocation reaches the
    other processes within ``ttl`` seconds, and this one at once."""

    def __init__(self, ttl: float = 10.0):
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, Client | None]] = {}
        #: When this process last recorded a key as seen, by (database, key id).
        self.seen_at: dict[tuple[str, int], datetime] = {}

    def get(self, database: str, key_hash: str) -> tuple[bool, Client | None]:
        entry = self._entries.get((database, key_hash))
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return False, None
        return True, entry[1]

    def put(self, database: str, key_hash: str, client: Client | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[(database, key_hash)] = (time.monotonic(), client)

    def forget(self, database: str, name: str) -> None:
        for cache_key, (_, client) in list(self._entries.items()):
            if cache_key[0] == database and client is not None and client.name == name:
                del self._entries[cache_key]


key_cache = KeyCache()


def _database(session: Session) -> str:
    return session.get_bind().url.render_as_string(hide_password=True)


def authenticate(session: Session, authorization: str | None) -> Client:
    """The key named by an ``Authorization: Bearer`` header, or Unauthorized."""
    challenge = {"WWW-Authenticate": 'Bearer realm="fetchfleet"'}
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", headers=challenge)
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'", headers=challenge)
    key_hash = hash_key(key.strip())
    database = _database(session)
    cached, client = key_cache.get(database, key_hash)
    if not cached:
        read_only(session)
        row = session.execute(
            select(
                ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.client_version, ApiKey.revoked_at, ApiKey.last_seen_at
            ).where(ApiKey.key_hash == key_hash)
        ).one_or_none()
        session.commit()
        client = None
        if row is not None:
            client = Client(row.id, row.name, row.role, row.client_version, row.revoked_at is not None)
            key_cache.seen_at[(database, row.id)] = row.last_seen_at or datetime.min.replace(tzinfo=UTC)
        key_cache.put(database, key_hash, client)
    if client is None or client.revoked:
        raise Unauthorized("unknown or revoked API key", headers=challenge)
    return client


def check_client_version(announced: str | None, minimum: str | None) -> None:
    if minimum is None:
        return
    if not announced:
        raise ClientTooOld(
            f"this coordinator needs fetchfleet clients >= {minimum}; "
            f"send the {CLIENT_VERSION_HEADER} header (the client does)"
        )
    try:
        too_old = Version(announced) < Version(str(minimum))
    except InvalidVersion:
        raise InvalidInput.at([CLIENT_VERSION_HEADER], f"not a version: {announced!r}", location="headers") from None
    if too_old:
        raise ClientTooOld(f"client version {announced} is older than the minimum {minimum}: please upgrade")


def _note_seen(session: Session, client: Client, version: str | None) -> None:
    """Record last contact (and the client version), at most once a minute per process,
    in a short write of its own."""
    database = _database(session)
    now = utcnow()
    version = version if version and _VERSION_TEXT.fullmatch(version) else client.client_version
    last = key_cache.seen_at.get((database, client.id))
    if last is not None and now - last < LAST_SEEN_RESOLUTION and version == client.client_version:
        return
    key_cache.seen_at[(database, client.id)] = now
    session.execute(update(ApiKey).where(ApiKey.id == client.id).values(last_seen_at=now, client_version=version))
    session.commit()
    if version != client.client_version:
        key_cache.forget(database, client.name)


def auth_required(role: Role, *, client_protocol: bool = False, optional_setting: str | None = None):
    """Require a key with ``role`` (admin keys may do everything clients may).

    ``client_protocol``: the endpoint is part of the node protocol, so the client's
    version is checked. ``optional_setting``: the key is only required when that config
    setting is true (e.g. ``STATS_REQUIRE_KEY``); otherwise a key that is sent is still
    checked, and ``g.client`` is None for callers without one.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            g.client = None
            required = optional_setting is None or current_app.config.get(optional_setting)
            if required or request.headers.get("Authorization"):  # a key sent is checked anyway
                client = authenticate(db.session, request.headers.get("Authorization"))
                if role == Role.ADMIN and client.role != Role.ADMIN:
                    raise Forbidden(f"this needs an admin key; key {client.name!r} is a {client.role} key")
                version = request.headers.get(CLIENT_VERSION_HEADER)
                if client_protocol:
                    check_client_version(version, current_app.config.get("MIN_CLIENT_VERSION"))
                _note_seen(db.session, client, version)
                g.client = client
            return view(*args, **kwargs)

        if optional_setting is None:
            return Blueprint.doc(security=SECURITY_DOC)(wrapper)
        return wrapper

    return decorator
