"""What a site is called and which engines may run it: checked by the coordinator when it
loads ``SITES`` and again by every node before it creates a folder named after a site."""

from __future__ import annotations

import re
import urllib.parse

ENGINES = ("gallery-dl", "yt-dlp")
#: A site name is also a folder under a node's ``--dest``: no separators, never ``.`` or ``..``.
SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
SITE_NAME_RULE = "1-63 of a-z 0-9 _ . - starting with a letter or digit"
#: The only URL schemes a node fetches.
FETCHED_SCHEMES = ("http", "https")


def is_site_name(name: object) -> bool:
    return isinstance(name, str) and SITE_NAME.fullmatch(name) is not None


def is_fetched_url(url: object) -> bool:
    """An http(s) URL with a host: the only kind of URL a node fetches."""
    if not isinstance(url, str):
        return False
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower() in FETCHED_SCHEMES and bool(parts.netloc)
