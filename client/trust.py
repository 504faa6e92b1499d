"""What a node accepts from the coordinator before any worker or engine sees it.

Whoever controls the coordinator, or the path to it, writes the leases. So every site a
lease describes passes ``common.engine_options`` (refused: its tasks fail as permanent,
with the reason, and the node logs it once), every task URL must be http or https,
and the node's own configuration (its gallery-dl config file, ``YT_DLP_OPTIONS``) stays
the operator's and is never filtered. Paths are confined to ``--dest`` by the engines
before anything is written (``client.engines``).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

from common.engine_options import Refused, vet_site
from common.sites import is_fetched_url

log = logging.getLogger("fetchfleet")


class SiteVetting:
    """Sites seen by this node, checked once each: the accepted ones go to the workers,
    a refused one is logged once and its tasks fail with the reason."""

    def __init__(self):
        self.accepted: dict[str, dict[str, Any]] = {}
        self.refused: dict[str, str] = {}
        self._seen: dict[str, Any] = {}

    def add(self, sites: Mapping[str, Any]) -> None:
        for name, info in sites.items():
            if self._seen.get(name) == info:
                continue
            self._seen[name] = info
            self.accepted.pop(name, None)
            self.refused.pop(name, None)
            try:
                self.accepted[name] = vet_site(name, info)
            except Refused as refusal:
                self.refused[name] = str(refusal)
                log.warning("refusing site %r from the coordinator: %s; its tasks fail (permanent)", name, refusal)

    def refusal_for(self, task: Mapping[str, Any]) -> str | None:
        """Why this node will not run ``task``, or None."""
        site = task.get("site")
        if site in self.refused:
            return f"refused by this node: {self.refused[site]}"
        if site not in self.accepted:
            return f"refused by this node: the coordinator did not describe site {site!r}"
        return url_refusal(task.get("url"))


def url_refusal(url: Any) -> str | None:
    """Why a task's URL is not fetched, or None."""
    if not isinstance(url, str) or len(url) > 8000:
        return "refused by this node: the task has no usable URL"
    return None if is_fetched_url(url) else scheme_refusal(url)


def scheme_refusal(url: str) -> str:
    """The failure text of a URL that is not http(s) (the task's, or one a job would open)."""
    scheme = urllib.parse.urlsplit(url).scheme or "this"
    return f"refused by this node: only http and https URLs are fetched, not {scheme!r}: {url[:200]}"
