"""The metadata cache: what any node already resolved, so no node repeats a site's API call.

One document per resolution (site + URL: which posts were found, when, by which node) and
one per post (its metadata). Backends: CouchDB (``COUCHDB_URL``; replicated with a
central CouchDB) or, with no URL, an embedded file cache. Any backend failure turns the
cache off for the rest of the run with one warning: the job goes on without it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from common.settings import REPO_ROOT

from .base import GuardedCache, MetadataCache, redact

__all__ = ["GuardedCache", "MetadataCache", "open_cache", "redact"]


def node_name(settings: dict[str, Any]) -> str:
    return settings.get("NODE_NAME") or socket.gethostname()


def open_cache(settings: dict[str, Any]) -> GuardedCache:
    """The configured cache behind its guard; a cache that cannot open is off, with a warning."""
    url = settings.get("COUCHDB_URL")
    max_age = settings["CACHE_MAX_AGE_SECONDS"]
    node = node_name(settings)
    if url:
        where = f"CouchDB {redact(url)}"
        try:
            from .couch import CouchCache

            cache: MetadataCache = CouchCache(url, settings["COUCHDB_DATABASE"], max_age=max_age, node=node)
        except Exception as error:
            return GuardedCache(None, where, secret_source=url, error=error)
        return GuardedCache(cache, where, secret_source=url)
    path = Path(settings["CACHE_PATH"])
    if not path.is_absolute():
        path = REPO_ROOT / path
    where = f"file cache {path}"
    try:
        from .file import FileCache

        return GuardedCache(FileCache(path, max_age=max_age, node=node), where)
    except Exception as error:
        return GuardedCache(None, where, error=error)
