"""``/metrics`` from the real coordinator under gunicorn with 2 workers after a demo run:
a counter incremented in one worker is in a scrape served by another, and the values are
what the database says."""

from __future__ import annotations

import http.client
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.fleet import Fleet
from tests.test_end_to_end import INVENTORY, run_everything

pytestmark = pytest.mark.e2e


def fresh_connection_get(url: str, path: str, headers=None) -> http.client.HTTPResponse:
    """One request on a new connection (keep-alive would stick to one worker)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
    answer = connection.getresponse()
    answer.body = answer.read()
    connection.close()
    return answer


def scrape(fleet: Fleet) -> dict[tuple[str, tuple], float]:
    answer = fresh_connection_get(fleet.coordinator.url, "/metrics", {"Authorization": f"Bearer {fleet.admin_key}"})
    assert answer.status == 200, answer.body[:500]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.body.decode())
        for sample in family.samples
    }


def samples_of(samples, name: str) -> dict[tuple, float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def test_metrics_after_a_demo_run_add_up_every_worker_and_match_the_database(demo_site, tmp_path):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    fleet = Fleet.start(demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    try:
        fleet.import_csv(INVENTORY)
        run_everything(fleet)
        for _ in range(40):
            assert fresh_connection_get(fleet.coordinator.url, "/openapi.json").status == 200
        scrapes = [scrape(fleet) for _ in range(8)]
    finally:
        fleet.stop()

    openapi = ("fetchfleet_http_requests_total", (("endpoint", "/openapi.json"), ("method", "GET"), ("status", "200")))
    assert [samples[openapi] for samples in scrapes] == [40.0] * 8  # every worker's requests, in every scrape
    counters = [samples_of(samples, "fetchfleet_results_total") for samples in scrapes]
    assert all(c == counters[0] for c in counters)

    engine = create_engine(fleet.database_url)
    with engine.connect() as connection:
        tasks = {
            (kind, site, state): count
            for kind, site, state, count in connection.execute(
                text("SELECT kind, site, state, count(*) FROM tasks GROUP BY kind, site, state")
            )
        }
        size_by_site = dict(
            connection.execute(
                text("SELECT t.site, sum(f.size) FROM files f JOIN tasks t ON t.id = f.task_id GROUP BY t.site")
            ).all()
        )
        nodes = set(connection.execute(text("SELECT name FROM api_keys WHERE last_seen_at IS NOT NULL")).scalars())
    engine.dispose()

    samples = scrapes[-1]
    gauges = {
        (labels["kind"], labels["site"], labels["state"]): value
        for label_items, value in samples_of(samples, "fetchfleet_tasks").items()
        for labels in [dict(label_items)]
    }
    assert gauges == tasks
    done = Counter({(k, s): n for (k, s, state), n in tasks.items() if state == "done"})
    results = samples_of(samples, "fetchfleet_results_total")
    assert results[(("error_class", ""), ("kind", "download"), ("status", "done"))] == sum(
        n for (kind, _), n in done.items() if kind == "download"
    )
    assert {
        dict(labels)["site"]: value
        for labels, value in samples_of(samples, "fetchfleet_bytes_downloaded_total").items()
    } == size_by_site
    seen = {dict(labels)["node"] for labels in samples_of(samples, "fetchfleet_node_last_seen_timestamp_seconds")}
    assert seen == nodes and "node1" in seen
    assert samples[("fetchfleet_leases_active", ())] == 0
    latency = samples_of(samples, "fetchfleet_http_request_duration_seconds_count")
    assert latency[(("endpoint", "/leases/<lease_id>/results"), ("method", "POST"))] > 0
