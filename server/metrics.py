"""``/metrics`` for Prometheus: counters kept by every process that serves requests, and
gauges read from the database at scrape time.

Under gunicorn each worker is its own process: ``server/gunicorn_conf.py`` gives them one
``PROMETHEUS_MULTIPROC_DIR``, where prometheus_client's multiprocess mode keeps each
worker's counters in files that any worker's scrape adds up. That variable must be set
before prometheus_client is first imported (it picks its value class on import); without
it (``flask run``, tests in one process) the counters are this process's own.

Labels name kinds, sites, states, outcomes, nodes and URL rules, never an item, a URL or
a key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, g, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.states import LeaseState

from .counts import task_counts
from .database import read_only, utcnow
from .models import ApiKey, Lease, SiteState
from .sites import SiteRegistry

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # a *_created gauge beside every counter: noise for a scrape

LEASE_REQUESTS = Counter(
    "fetchfleet_lease_requests",
    "Lease requests answered, by task kind and outcome (granted: a lease with tasks; empty: nothing to hand out).",
    ["kind", "outcome"],
    registry=None,
)
RESULTS = Counter(
    "fetchfleet_results",
    "Task results recorded, by kind, status and failure class (empty for done).",
    ["kind", "status", "error_class"],
    registry=None,
)
LEASES_EXPIRED = Counter(
    "fetchfleet_leases_expired",
    "Leases that expired before their results arrived; their tasks went back to the queue.",
    registry=None,
)
BYTES_DOWNLOADED = Counter(
    "fetchfleet_bytes_downloaded",
    "Bytes of the files recorded by done downloads, by site.",
    ["site"],
    registry=None,
)
HTTP_REQUESTS = Counter(
    "fetchfleet_http_requests",
    "HTTP requests served, by method, URL rule and status code.",
    ["method", "endpoint", "status"],
    registry=None,
)
HTTP_LATENCY = Histogram(
    "fetchfleet_http_request_duration_seconds",
    "Time from a request's arrival to its response, by method and URL rule.",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=None,
)
PROCESS_METRICS = (LEASE_REQUESTS, RESULTS, LEASES_EXPIRED, BYTES_DOWNLOADED, HTTP_REQUESTS, HTTP_LATENCY)


def count_results(kind: str, site: str | None, results, accepted: set[int]) -> None:
    """A submit's accepted results: one per task, and the bytes of done downloads."""
    size = 0
    for result in results:
        if result["task_id"] not in accepted:
            continue
        RESULTS.labels(kind, result["status"], result.get("error_class") or "").inc()
        if result["status"] == "done" and not result.get("already_on_node"):
            size += sum(record["size"] for record in result.get("files") or ())
    if size and site is not None:
        BYTES_DOWNLOADED.labels(site).inc(size)


class DatabaseCollector:
    """Gauges read from the database when Prometheus scrapes: the same in every worker."""

    def __init__(self, session: Session, sites: SiteRegistry, *, nodes: bool = True):
        self.session, self.sites, self.nodes = session, sites, nodes

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        session = self.session
        read_only(session)
        tasks = GaugeMetricFamily(
            "fetchfleet_tasks", "Tasks by kind, site and state.", labels=["kind", "site", "state"]
        )
        for kind, site, state, count in task_counts(session):
            tasks.add_metric([kind, site, state], count)
        yield tasks

        live = (Lease.state == LeaseState.ACTIVE) & (Lease.expires_at > now)
        active, leased = session.execute(
            select(func.count(), func.coalesce(func.sum(Lease.task_count), 0)).where(live)
        ).one()
        yield GaugeMetricFamily("fetchfleet_leases_active", "Leases held by nodes right now.", value=active)
        yield GaugeMetricFamily("fetchfleet_tasks_leased", "Tasks in the leases held right now.", value=int(leased))

        cooldown = GaugeMetricFamily(
            "fetchfleet_site_cooldown_seconds",
            "Seconds until a site's cooldown ends (0: not cooling).",
            labels=["site"],
        )
        paused = GaugeMetricFamily(
            "fetchfleet_site_paused", "1 while an operator has paused the site.", labels=["site"]
        )
        states = {row.name: row for row in session.execute(select(SiteState)).scalars()}
        for name in sorted(set(self.sites.names()) | set(states)):
            state = states.get(name)
            until = state.cooldown_until if state is not None else None
            cooldown.add_metric([name], max(0.0, (until - now).total_seconds()) if until else 0.0)
            paused.add_metric([name], 1.0 if state is not None and state.paused_at is not None else 0.0)
        yield cooldown
        yield paused

        seen = GaugeMetricFamily(
            "fetchfleet_node_last_seen_timestamp_seconds",
            "When each node's key was last used (Unix time).",
            labels=["node"],
        )
        keys = session.execute(
            select(ApiKey.name, ApiKey.last_seen_at).where(
                ApiKey.revoked_at.is_(None), ApiKey.last_seen_at.is_not(None)
            )
        )
        for name, last_seen in keys if self.nodes else ():
            seen.add_metric([name], last_seen.timestamp())
        yield seen
        session.commit()


def exposition(session: Session, sites: SiteRegistry, *, nodes: bool = True) -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type (``nodes``: with the
    gauge that names the nodes)."""
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        for metric in PROCESS_METRICS:
            registry.register(metric)
    registry.register(DatabaseCollector(session, sites, nodes=nodes))
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask) -> None:
    """Time and count every request."""

    @app.before_request
    def _start_clock():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            # a caller may send any method name: one label value each would grow without bound
            method = request.method if request.method in _METHODS else "other"
            HTTP_LATENCY.labels(method, endpoint).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
        return response
