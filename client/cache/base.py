"""Resolution logic shared by every cache backend, on top of a tiny document store.

A backend only reads and writes documents by id (``_read`` / ``_write``, in bulk);
this class decides what the documents are and when an entry is fresh.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger("fetchfleet")

Key = tuple[str, str]  # (site, url resolved)
Resolved = tuple[str, str, list[Mapping[str, Any]]]  # (site, url, found things)


def resolution_id(site: str, url: str) -> str:
    return f"resolution:{site}:{url}"


def post_id(site: str, remote_id: str) -> str:
    return f"post:{site}:{remote_id}"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class MetadataCache:
    """``lookup`` fresh resolutions, ``store`` new ones. Nothing-found is not cached: the
    coordinator retries it with backoff, and a cached miss would answer every retry."""

    def __init__(self, *, max_age: float, node: str):
        self.max_age = timedelta(seconds=max_age)
        self.node = node

    # -- backend
    def _read(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def _write(self, docs: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}

    # -- resolutions
    def lookup(self, keys: Iterable[Key], now: datetime | None = None) -> dict[Key, list[dict[str, Any]]]:
        """Found things of each fresh, complete resolution among ``keys``, in two bulk reads."""
        now = now or datetime.now(UTC)
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        docs = self._read([resolution_id(site, url) for site, url in keys])
        fresh: dict[Key, dict[str, Any]] = {}
        for site, url in keys:
            doc = docs.get(resolution_id(site, url))
            if doc is not None and now - _when(doc["resolved_at"]) <= self.max_age:
                fresh[(site, url)] = doc
        wanted = list(dict.fromkeys(post_id(s, r) for doc in fresh.values() for s, r in doc["posts"]))
        posts = self._read(wanted) if wanted else {}
        hits = {}
        for key, doc in fresh.items():
            ids = [post_id(s, r) for s, r in doc["posts"]]
            if all(i in posts for i in ids):  # a post not replicated yet: resolve again
                hits[key] = [_found(posts[i]) for i in ids]
        return hits

    def store(self, resolutions: Iterable[Resolved], now: datetime | None = None) -> int:
        """Write resolutions and their posts in one bulk write; returns how many resolutions."""
        stamp = (now or datetime.now(UTC)).isoformat()
        docs: dict[str, dict[str, Any]] = {}
        count = 0
        for site, url, found in resolutions:
            if not found:
                continue
            count += 1
            docs[resolution_id(site, url)] = {
                "_id": resolution_id(site, url),
                "type": "resolution",
                "site": site,
                "url": url,
                "posts": [[thing["site"], str(thing["remote_id"])] for thing in found],
                "resolved_at": stamp,
                "node": self.node,
            }
            for thing in found:
                identifier = post_id(thing["site"], str(thing["remote_id"]))
                docs[identifier] = {
                    "_id": identifier,
                    "type": "post",
                    "site": thing["site"],
                    "remote_id": str(thing["remote_id"]),
                    "url": thing.get("url"),
                    "metadata": thing.get("metadata") or {},
                    "resolved_at": stamp,
                    "node": self.node,
                }
        if docs:
            self._write(list(docs.values()))
        return count


def _found(post: Mapping[str, Any]) -> dict[str, Any]:
    """A cached post as a found post on the wire (no ``url`` key when none was reported)."""
    found = {"site": post["site"], "remote_id": post["remote_id"], "metadata": post.get("metadata") or {}}
    if post.get("url"):
        found["url"] = post["url"]
    return found


def newest(revisions: list[dict[str, Any]]) -> dict[str, Any]:
    """The winning revision among conflicting ones, the same on every node: the newest
    resolution; ties by node name, then by revision id."""
    return max(revisions, key=lambda doc: (doc.get("resolved_at", ""), doc.get("node", ""), doc.get("_rev", "")))


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str) -> str:
    """``https://user:secret@host`` -> ``https://***@host``, anywhere in a text."""
    return _CREDENTIALS.sub("***@", text)


class GuardedCache:
    """The cache the runner uses: any backend error turns it off for the rest of the run,
    with one warning that never shows credentials."""

    def __init__(
        self,
        cache: MetadataCache | None,
        where: str,
        *,
        secret_source: str | None = None,
        error: Exception | None = None,
    ):
        self.cache = cache
        self.where = where
        self._secrets = _secrets_of(secret_source)
        if error is not None:
            self._disable(error)

    @property
    def enabled(self) -> bool:
        return self.cache is not None

    def _disable(self, error: BaseException) -> None:
        message = f"{error.__class__.__name__}: {error}".strip().rstrip(":")
        for secret in self._secrets:
            message = message.replace(secret, "***")
        log.warning("metadata cache (%s) unavailable, going on without it: %s", self.where, redact(message)[:300])
        if self.cache is not None:
            try:
                self.cache.close()
            except Exception:
                pass
        self.cache = None

    def lookup(self, keys: Iterable[Key]) -> dict[Key, list[dict[str, Any]]]:
        if self.cache is None:
            return {}
        try:
            hits = self.cache.lookup(keys)
        except Exception as error:
            self._disable(error)
            return {}
        return hits

    def store(self, resolutions: list[Resolved]) -> None:
        if self.cache is None or not resolutions:
            return
        try:
            self.cache.store(resolutions)
        except Exception as error:
            self._disable(error)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _secrets_of(url: str | None) -> list[str]:
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    return [secret for secret in (parts.password, urllib.parse.unquote(parts.password or "")) if secret]
