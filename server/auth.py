"""API keys: creation, lookup by hash, roles, and the client version gate.

Keys are 256-bit random tokens, so a fast hash (sha256) is enough to store them: a
password hash would cost ~100 ms per request for no gain.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta

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


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))


def authenticate(session: Session, authorization: str | None) -> ApiKey:
    """The key named by an ``Authorization: Bearer`` header, or Unauthorized."""
    challenge = {"WWW-Authenticate": 'Bearer realm="fetchfleet"'}
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", headers=challenge)
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'", headers=challenge)
    api_key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key.strip())))
    if api_key is None or api_key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key", headers=challenge)
    return api_key


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


def _note_seen(session: Session, api_key: ApiKey, version: str | None) -> None:
    """Record last contact, at most once a minute, in a short write of its own."""
    session.commit()  # end the reading transaction: the view starts its own
    now = utcnow()
    version = version[:32] if version else api_key.client_version
    stale = api_key.last_seen_at is None or now - api_key.last_seen_at >= LAST_SEEN_RESOLUTION
    if stale or version != api_key.client_version:
        session.execute(update(ApiKey).where(ApiKey.id == api_key.id).values(last_seen_at=now, client_version=version))
        session.commit()


def current_key() -> ApiKey:
    return g.api_key


def auth_required(role: Role, *, client_protocol: bool = False, optional_setting: str | None = None):
    """Require a key with ``role`` (admin keys may do everything clients may).

    ``client_protocol``: the endpoint is part of the node protocol, so the client's
    version is checked. ``optional_setting``: the key is only required when that config
    setting is true (e.g. ``STATS_REQUIRE_KEY``).
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if optional_setting is None or current_app.config.get(optional_setting):
                read_only(db.session)
                api_key = authenticate(db.session, request.headers.get("Authorization"))
                if role == Role.ADMIN and api_key.role != Role.ADMIN:
                    raise Forbidden(f"this needs an admin key; key {api_key.name!r} is a {api_key.role} key")
                version = request.headers.get(CLIENT_VERSION_HEADER)
                if client_protocol:
                    check_client_version(version, current_app.config.get("MIN_CLIENT_VERSION"))
                _note_seen(db.session, api_key, version)
                g.api_key = api_key
            return view(*args, **kwargs)

        if optional_setting is None:
            return Blueprint.doc(security=SECURITY_DOC)(wrapper)
        return wrapper

    return decorator
