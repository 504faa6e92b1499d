"""Imported by the worker pool's fork server when a node runs yt-dlp sites (``client.pool``):
yt-dlp's extractors are listed, imported and every one's URL pattern compiled here, once,
so each forked worker inherits them instead of doing it all again on its first job."""

from .yt_dlp import warm_extractors

warm_extractors()
