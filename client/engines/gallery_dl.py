"""gallery-dl as a library: enumerate posts without downloading, download and learn what
was written, and classify failures from the HTTP statuses the job actually saw.

gallery-dl's configuration is one process-global dict and custom site instances are
registered when an extractor module is first imported, so this engine lives in a
worker process of its own: it installs the site options and the user's config before
the first extractor lookup, and resets the config before every job.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gallery_dl import config as gdl_config
from gallery_dl import exception, extractor, job, util

from common.states import FailureClass

from .base import (
    Engine,
    Failure,
    Found,
    KnownRun,
    Resolution,
    StopAtKnown,
    Written,
    classify_http,
    json_safe,
    node_fault_of,
    within,
)

#: Keys that name a post on most sites, in order of preference.
ID_KEYS = ("id", "post_id", "tweet_id", "gallery_id")


class GalleryDlEngine(Engine):
    name = "gallery-dl"

    def __init__(self, settings: Mapping[str, Any], sites: Mapping[str, Mapping[str, Any]]):
        super().__init__(settings, sites)
        self._base = self._base_config()

    def _base_config(self) -> dict[str, Any]:
        """Site options from the coordinator (vetted: ``common.engine_options``), under the
        user's own gallery-dl config."""
        gdl_config.clear()
        # Defaults we need, each overridable by the user's config except where noted below.
        util.combine_dict(gdl_config._config, {"extractor": {"directory": [], "retries": 2, "sleep-retries": 1}})
        for site in self.sites.values():
            util.combine_dict(gdl_config._config, copy.deepcopy(dict(site.get("options") or {})))
        user_file = self.settings.get("GALLERY_DL_CONFIG")
        if user_file is None:
            gdl_config.load()  # gallery-dl's usual locations
        elif user_file:
            gdl_config.load([str(user_file)], strict=True)
        if gdl_config.get(("cache",), "file", util.SENTINEL) is util.SENTINEL:
            gdl_config.set(("cache",), "file", None)
        # Not overridable: fetchfleet reports 429s upstream so the whole site cools down,
        # keeps its own per-node archive, and never prints to the terminal. Root-level
        # keys outrank every extractor and downloader level (gallery-dl's lookup order).
        gdl_config.set((), "sleep-429", 0)
        gdl_config.set((), "archive", None)
        gdl_config.set(("output",), "mode", "null")
        gdl_config.set(("output",), "progress", False)
        gdl_config.set(("downloader",), "progress", None)  # its own bar on stderr after 3 s
        return copy.deepcopy(gdl_config._config)

    def _reset(self, directory: Path | None = None, partial: Path | None = None) -> None:
        gdl_config._config.clear()
        gdl_config._config.update(copy.deepcopy(self._base))
        if directory is not None:
            gdl_config.set((), "base-directory", str(directory))
        if partial is not None:
            gdl_config.set((), "part-directory", str(partial))

    def resolve(self, url: str, site: str, stop: StopAtKnown | None = None) -> Resolution:
        self._reset()
        collector = _Collector(known=KnownRun(stop))
        status = collector.run(_EnumerateJob, url)
        if status:
            raise collector.failure(status)
        grouped: dict[str, Found] = {}
        counts: dict[str, int] = {}
        for file_url, kwdict in collector.items:
            remote_id = _remote_id(kwdict, file_url)
            counts[remote_id] = counts.get(remote_id, 0) + 1
            if remote_id not in grouped:
                grouped[remote_id] = Found(remote_id, file_url, json_safe(kwdict))
        for remote_id, found in grouped.items():
            found.metadata["file_count"] = counts[remote_id]
        return Resolution(list(grouped.values()), collector.known.stopped)

    def download(
        self, url: str, site: str, directory: Path, partial: Path, task: Mapping[str, Any] | None = None
    ) -> list[Written]:
        self._reset(directory, partial)
        collector = _Collector(confined_to=(directory, partial))
        status = collector.run(_DownloadJob, url)
        if collector.refused:
            raise Failure(FailureClass.PERMANENT, collector.refused)
        if status or collector.failed:
            raise collector.failure(status)
        if not collector.written:
            raise Failure(FailureClass.PERMANENT, f"no files at {url}")
        return collector.written


def _remote_id(kwdict: Mapping[str, Any], url: str) -> str:
    for key in ID_KEYS:
        value = kwdict.get(key)
        if value not in (None, ""):
            return str(value)
    return "url-" + hashlib.sha1(url.encode()).hexdigest()[:20]


class _Collector(logging.Handler):
    """What one job saw: items, written/failed files, HTTP statuses, error messages."""

    def __init__(self, confined_to: tuple[Path, ...] = (), known: KnownRun | None = None):
        super().__init__(logging.WARNING)
        #: A re-check: counts known posts in a row, to stop at them.
        self.known = known or KnownRun(None)
        #: Folders a download job may write in; a path outside them stops the job.
        self.confined_to = confined_to
        #: Why the job was stopped before writing somewhere it must not.
        self.refused: str | None = None
        self.items: list[tuple[str, dict]] = []
        self.written: list[Written] = []
        self.failed: list[str] = []
        self.responses: list[tuple[int, str, str | None]] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:
            self.messages.append(str(record.msg))

    def watch(self, session) -> None:
        """Record every response of the extractor's session (API and file requests alike)."""
        if getattr(session, "_fetchfleet_watched", False):
            return
        session._fetchfleet_watched = True

        def record(response, *args, **kwargs):
            self.responses.append((response.status_code, response.url, response.headers.get("Retry-After")))

        session.hooks["response"].append(record)

    def run(self, job_class, url: str) -> int:
        root = logging.getLogger()
        root.addHandler(self)
        try:
            try:
                running = job_class(url, collector=self)
            except exception.NoExtractorError:
                raise Failure(
                    FailureClass.PERMANENT, f"unsupported URL: gallery-dl has no extractor for {url}"
                ) from None
            return running.run()
        except exception.TerminateExtraction:
            if not self.known.stopped:
                raise
            return 0  # stopped at known posts: every page not asked for is a request saved
        finally:
            root.removeHandler(self)

    def check_path(self, pathfmt) -> None:
        """Stop the job before a file or ``.part`` lands outside ``confined_to``."""
        directory = pathfmt.realdirectory
        filename = pathfmt.build_filename(pathfmt.kwdict) if pathfmt.extension else pathfmt.filename
        if filename in ("", ".", "..") or "/" in (filename or ""):
            problem = f"unsafe file name {filename!r}"
        else:
            paths = [os.path.join(directory, filename or ""), pathfmt.temppath or directory]
            outside = [path for path in paths if not any(within(path, root) for root in self.confined_to)]
            if not outside:
                return
            problem = f"{outside[0]} is outside --dest"
        self.refused = f"refused by this node: the job would write {problem}"
        raise _PathRefused(self.refused)

    def failure(self, status: int) -> Failure:
        if (fault := next(filter(None, map(node_fault_of, reversed(self.messages))), None)) is not None:
            raise fault
        http = classify_http(self.responses)
        if http is not None:
            return http
        last = self.messages[-1] if self.messages else f"gallery-dl exit status {status}"
        if last.startswith("Failed to download"):
            # gallery-dl ends with "Failed to download X"; why is in the warning before it.
            cause = next((m for m in reversed(self.messages[:-1]) if not m.startswith("Failed to download")), None)
            if cause is not None:
                last = f"{last}: {cause}"
        if status & 16:
            return Failure(FailureClass.PERMANENT, f"authentication failed or required: {last}")
        if status & 32:
            return Failure(FailureClass.PERMANENT, f"bad input: {last}")
        return Failure(FailureClass.TRANSIENT, last)


class _PathRefused(Exception):
    """Raised from a path hook: gallery-dl ends the job, and ``refused`` says why."""


class _Watching:
    """Mixin: hook the extractor's HTTP session before the first request."""

    collector: _Collector

    def _init(self):
        super()._init()
        self.collector.watch(self.extractor.session)


class _EnumerateJob(_Watching, job.Job):
    """Lists (file URL, metadata) of everything found; downloads nothing. Follows queued
    children (a profile's galleries, a search's posts) like ``DataJob`` with resolve."""

    def __init__(self, url, parent=None, collector: _Collector | None = None):
        self.collector = collector if collector is not None else parent.collector
        self.visited = set() if parent is None else parent.visited
        super().__init__(url, parent)

    def handle_url(self, url, kwdict):
        self.collector.items.append((url, dict(kwdict)))
        if self.collector.known.saw(_remote_id(kwdict, url)):
            # Out of every nested job at once (a child's StopExtraction would only end the child).
            raise exception.TerminateExtraction()

    def handle_queue(self, url, kwdict):
        if url in self.visited:
            return
        self.visited.add(url)
        cls = kwdict.get("_extractor")
        child = cls.from_url(url) if cls else extractor.find(url)
        if child is None:
            self.collector.items.append((url, dict(kwdict)))
            return
        self.status |= self.__class__(child, self).run()


class _DownloadJob(_Watching, job.DownloadJob):
    """A DownloadJob that tells the collector which files it wrote, skipped as already
    present, or failed; ``.part`` files are never reported."""

    def __init__(self, url, parent=None, collector: _Collector | None = None):
        self.collector = collector if collector is not None else parent.collector
        super().__init__(url, parent)

    def initialize(self, kwdict=None):
        super().initialize(kwdict)
        if not isinstance(self.hooks, dict):  # gallery-dl makes the dict only for postprocessors
            self.hooks = collections.defaultdict(list)
        collector = self.collector

        def written(pathfmt):
            collector.written.append(Written(Path(pathfmt.realpath), json_safe(pathfmt.kwdict)))

        def failed(pathfmt):
            collector.failed.append(pathfmt.filename or "?")

        # Checked when the name is known (before the existence check and the download)
        # and again before the finished file is moved into place.
        self.hooks["prepare"].insert(0, collector.check_path)
        self.hooks["file"].insert(0, collector.check_path)
        self.hooks["after"].append(written)
        self.hooks["skip"].append(written)  # already on disk from an earlier attempt
        self.hooks["error"].append(failed)
