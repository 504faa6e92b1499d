"""Talking to the coordinator over HTTP, with retries that fit each call.

Submitting results, heartbeats and releases are idempotent on the server, so they are
retried on any network error or 5xx. A lease request is retried only when the
connection failed before it was sent: a lost response must not lease twice.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from common.version import CLIENT_VERSION_HEADER, __version__

#: Statuses that mean "a proxy or the server is briefly unavailable".
RETRY_STATUSES = (502, 503, 504)
#: Statuses after which retrying cannot help: wrong key, wrong role, client too old.
FATAL_STATUSES = (401, 403, 426)


class CoordinatorError(Exception):
    """The coordinator refused a call or could not be reached; ``message`` is one line."""

    def __init__(self, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body or {}

    @property
    def fatal(self) -> bool:
        return self.status in FATAL_STATUSES


def _session(key: str, retry: Retry) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {
            "Authorization": f"Bearer {key}",
            CLIENT_VERSION_HEADER: __version__,
            "User-Agent": f"fetchfleet-client/{__version__}",
        }
    )
    return session


class Coordinator:
    def __init__(self, url: str, key: str, *, timeout: float = 30, retries: int = 3):
        self.url = url.rstrip("/")
        self.timeout = timeout
        backoff = {"backoff_factor": 0.5, "backoff_max": 30, "raise_on_status": False}
        self._safe = _session(
            key,
            Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                status_forcelist=RETRY_STATUSES,
                allowed_methods=None,
                **backoff,
            ),
        )
        self._lease = _session(
            key, Retry(total=retries, connect=retries, read=0, status=0, other=0, allowed_methods=None, **backoff)
        )

    def close(self) -> None:
        self._safe.close()
        self._lease.close()

    def _call(self, session: requests.Session, method: str, path: str, *, ok=(200,), **kwargs) -> dict[str, Any]:
        url = self.url + path
        try:
            response = session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            reason = getattr(exc, "args", [exc])[0]
            raise CoordinatorError(f"cannot reach the coordinator at {self.url}: {_short(reason)}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code not in ok:
            message = body.get("message") if isinstance(body, dict) else None
            raise CoordinatorError(
                f"coordinator answered {response.status_code} to {method} {path}: {message or response.reason}",
                response.status_code,
                body if isinstance(body, dict) else None,
            )
        return body

    def sites(self) -> dict[str, dict[str, Any]]:
        """The coordinator's sites as it describes them (vetted by the caller, ``client.trust``)."""
        return {
            name: {"engine": site.get("engine"), "options": site.get("options") or {}}
            for name, site in self.site_list().items()
        }

    def site_list(self) -> dict[str, dict[str, Any]]:
        """Every field ``GET /sites`` gives, by site name (templates, health test...)."""
        listed = self._call(self._safe, "GET", "/sites")
        if not isinstance(listed, list):
            return {}
        return {site["name"]: site for site in listed if isinstance(site, dict) and isinstance(site.get("name"), str)}

    def report_test(self, site: str, passed: bool, checks: list[dict[str, Any]]) -> dict:
        body = {"passed": passed, "checks": checks}
        return self._call(self._safe, "POST", f"/sites/{site}/test-results", json=body)

    def lease(self, kind: str, n: int, *, site: str | None = None, lease_seconds: int | None = None) -> dict:
        body: dict[str, Any] = {"kind": kind, "n": n}
        if site is not None:
            body["site"] = site
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        return self._call(self._lease, "POST", "/leases", json=body, ok=(200, 201))

    def extend(self, lease_id: str, seconds: int | None = None) -> dict:
        body = {} if seconds is None else {"seconds": seconds}
        return self._call(self._safe, "POST", f"/leases/{lease_id}/extend", json=body)

    def release(self, lease_id: str, task_ids: list[int] | None = None) -> list[int]:
        body = {} if task_ids is None else {"task_ids": task_ids}
        return self._call(self._safe, "POST", f"/leases/{lease_id}/release", json=body)["released"]

    def files_stored(self, files: list[dict]) -> dict:
        """Tell the coordinator which of this node's files are in the file store now."""
        return self._call(self._safe, "POST", "/files/stored", json={"files": files})

    def submit(self, lease_id: str, results: list[dict]) -> dict:
        """Record results; a 409 (some tasks no longer ours) is an answer, not an error."""
        return self._call(self._safe, "POST", f"/leases/{lease_id}/results", json={"results": results}, ok=(200, 409))


def _short(reason: object) -> str:
    text = str(reason)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Max retries exceeded"):
        if marker in text:
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return text[:200]
