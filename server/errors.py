"""Domain errors and the one JSON error shape every HTTP error uses.

FetchfleetError
 +-- InvalidInput      400  a field is wrong; ``errors`` names it
 +-- Unauthorized      401  no key, or a key we do not know
 +-- Forbidden         403  a key without the needed role
 +-- NotFound          404
 +-- Conflict          409  e.g. a lease that was already reclaimed
 +-- ClientTooOld      426  the client's version is below MIN_CLIENT_VERSION

Error body (flask-smorest's shape): ``{"code", "status", "message", "errors"?}`` where
``errors`` maps the location (``json``, ``query``, ``csv``) to field paths and messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from werkzeug.exceptions import HTTPException


class FetchfleetError(Exception):
    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class InvalidInput(FetchfleetError):
    status_code = 400

    @classmethod
    def at(cls, path: Sequence[str | int], problem: str, location: str = "json") -> InvalidInput:
        """An error for one field, e.g. ``at(["results", 3, "site"], "unknown site 'x'")``."""
        nested: Any = [problem]
        for part in reversed(path):
            nested = {part: nested}
        dotted = ".".join(str(part) for part in path)
        return cls(f"{location}.{dotted}: {problem}", errors={location: nested})


class Unauthorized(FetchfleetError):
    status_code = 401


class Forbidden(FetchfleetError):
    status_code = 403


class NotFound(FetchfleetError):
    status_code = 404


class Conflict(FetchfleetError):
    status_code = 409


class ClientTooOld(FetchfleetError):
    status_code = 426


class Unavailable(FetchfleetError):
    """Something the coordinator depends on (the file store) does not answer right now."""

    status_code = 503


def summarize(errors: Mapping[str, Any]) -> str:
    """One readable line out of nested marshmallow messages: ``json.n: Must be ...``."""
    lines: list[str] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, [*path, str(key)])
        elif isinstance(node, list | tuple) and node and all(isinstance(v, str) for v in node):
            lines.append(f"{'.'.join(path)}: {' '.join(node)}")
        elif isinstance(node, list | tuple):
            for index, value in enumerate(node):
                walk(value, [*path, str(index)])
        else:
            lines.append(f"{'.'.join(path)}: {node}")

    walk(errors, [])
    if len(lines) > 3:
        return "; ".join(lines[:3]) + f"; and {len(lines) - 3} more"
    return "; ".join(lines)


def error_body(code: int, status: str, message: str, errors: Mapping[str, Any] | None = None) -> dict:
    body: dict[str, Any] = {"code": code, "status": status, "message": message}
    if errors:
        body["errors"] = errors
    return body


def handle_http_exception(error: HTTPException):
    """Every werkzeug/webargs HTTP error, in the one shape, always with a message."""
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message")
    if message is None:
        message = summarize(errors) if errors else (error.description or error.name)
    headers = dict(data.get("headers") or {})
    # The headers werkzeug gives the error itself: a 405's Allow, a 401's WWW-Authenticate.
    headers.update((name, value) for name, value in error.get_headers() if name.lower() != "content-type")
    return error_body(error.code, error.name, message, errors), error.code, headers


def handle_fetchfleet_error(error: FetchfleetError):
    from werkzeug.http import HTTP_STATUS_CODES

    body = error_body(error.status_code, HTTP_STATUS_CODES.get(error.status_code, "Error"), error.message, error.errors)
    body.update(error.extra)
    return body, error.status_code, error.headers


def register_error_handlers(app) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(FetchfleetError, handle_fetchfleet_error)
