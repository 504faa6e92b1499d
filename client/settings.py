"""Client node settings: every default in one place, each with the reason for its value."""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # The coordinator to pull work from, and this node's key (flask create-key NAME).
    "SERVER_URL": "http://127.0.0.1:5000",
    "API_KEY": None,
    # Where downloads go; the coordinator records paths relative to it.
    "DEST": "downloads",
    # The user's own gallery-dl config file (credentials, cookies, sleep settings).
    # None: gallery-dl's usual locations (~/.config/gallery-dl/config.json, ...).
    "GALLERY_DL_CONFIG": None,
    # Extra yt-dlp options for every download on this node (e.g. {"cookiefile": "..."}).
    "YT_DLP_OPTIONS": {},
    # Parallel worker processes for gallery-dl / yt-dlp jobs (their config is process-global).
    "JOBS": 1,
    # Metadata cache: a CouchDB URL (credentials in the URL are never logged), or None for
    # the embedded file cache at CACHE_PATH.
    "COUCHDB_URL": None,
    "COUCHDB_DATABASE": "fetchfleet_cache",
    "CACHE_PATH": "var/cache",
    # Resolutions older than this are resolved again: sites gain posts over time.
    "CACHE_MAX_AGE_SECONDS": 24 * 3600,
    # Seconds to wait for the coordinator before giving up on one request (retried).
    "HTTP_TIMEOUT": 30,
}
