"""Client node settings: every default in one place, each with the reason for its value."""

from __future__ import annotations

from pathlib import Path
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
    # This node's name in the cache documents it writes (None: the host name).
    "NODE_NAME": None,
    # Seconds to wait for the coordinator before giving up on one request (retried).
    "HTTP_TIMEOUT": 30,
    # The central file store: None keeps files under --dest only; "s3://bucket/prefix"
    # uploads each file once, content-addressed, into that S3-compatible bucket (the
    # endpoint URL for SeaweedFS, MinIO, Ceph...; None for AWS). Credentials: boto3's
    # usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials, never here.
    "FILE_STORE": None,
    "FILE_STORE_ENDPOINT": None,
    "FILE_STORE_REGION": None,
    # With a file store: keep the local copy after a verified upload (False: delete it).
    "KEEP_LOCAL_COPY": True,
}


def validate_node(settings: dict[str, Any]) -> None:
    """What only commands that talk to the coordinator need (``--help`` and ``cache`` do not)."""
    from common.settings import ConfigError

    if not settings.get("API_KEY"):
        raise ConfigError("no API key: pass --key, or set API_KEY in config.py or FETCHFLEET_API_KEY")


def validate(settings: dict[str, Any]) -> None:
    """Fail before contacting anyone, naming the setting."""
    from common.settings import ConfigError

    url = settings.get("SERVER_URL")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"SERVER_URL must be an http(s) URL, got {url!r}")
    jobs = settings.get("JOBS")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= 64:
        raise ConfigError(f"JOBS must be an integer from 1 to 64, got {jobs!r}")
    timeout = settings.get("HTTP_TIMEOUT")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"HTTP_TIMEOUT must be a positive number of seconds, got {timeout!r}")
    gallery_dl_config = settings.get("GALLERY_DL_CONFIG")
    if gallery_dl_config and not Path(gallery_dl_config).is_file():
        raise ConfigError(f"GALLERY_DL_CONFIG names a file that does not exist: {gallery_dl_config}")
    if not isinstance(settings.get("YT_DLP_OPTIONS") or {}, dict):
        raise ConfigError("YT_DLP_OPTIONS must be a mapping of yt-dlp options")
    if not isinstance(settings.get("KEEP_LOCAL_COPY"), bool):
        raise ConfigError(f"KEEP_LOCAL_COPY must be True or False, got {settings.get('KEEP_LOCAL_COPY')!r}")
    from common.file_store import parse_config

    parse_config(settings)
