"""Engines: one plug-in per downloader, all of the same shape (``base.Engine``).

Imported lazily, by name, inside worker processes: the parent process never loads
gallery-dl or yt-dlp, and a worker loads only the engines its sites use.
"""

from __future__ import annotations

import importlib

from .base import Engine, Failure

ENGINES = {
    "gallery-dl": "client.engines.gallery_dl:GalleryDlEngine",
    "yt-dlp": "client.engines.yt_dlp:YtDlpEngine",
}

__all__ = ["ENGINES", "Engine", "Failure", "load"]


def load(name: str) -> type[Engine]:
    try:
        module_name, _, class_name = ENGINES[name].partition(":")
    except KeyError:
        raise Failure("permanent", f"this client has no engine {name!r}; it knows {', '.join(ENGINES)}") from None
    return getattr(importlib.import_module(module_name), class_name)
