"""``/metrics`` in one process on both databases: parsed with prometheus_client's own
parser, the counters move with what was served, the gauges say what the database holds."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from tests.helpers import Actions, file_record


def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    answer = client.get("/metrics", headers=headers or {})
    assert answer.status_code == 200, answer.data[:500]
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.data.decode())
        for sample in family.samples
    }


def delta(after, before, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_follow_leases_results_and_bytes(client, actions):
    from server.metrics import PROCESS_METRICS

    for metric in PROCESS_METRICS:  # this process's counters: other tests sent sizes near 2**63
        metric.clear()
    before = scrape(client)
    actions.add_download_tasks("booru", 3)
    lease = actions.lease("download", n=3, site="booru").get_json()
    one, two, three = lease["tasks"]
    results = [
        {"task_id": one["id"], "status": "done", "files": [file_record("a.png", 100), file_record("b.png", 23)]},
        {"task_id": two["id"], "status": "failed", "error_class": "transient", "error": "HTTP 503"},
        {"task_id": three["id"], "status": "failed", "error_class": "rate_limited", "retry_after": 120},
    ]
    assert actions.submit(lease["lease_id"], results).status_code == 200
    assert actions.submit(lease["lease_id"], results).status_code == 200  # sent again: counted once
    assert actions.lease("download", n=3, site="booru").get_json()["lease_id"] is None  # cooling down
    assert actions.lease("download", n=1).status_code == 400

    after = scrape(client)
    assert delta(after, before, "fetchfleet_lease_requests_total", kind="download", outcome="granted") == 1
    assert delta(after, before, "fetchfleet_lease_requests_total", kind="download", outcome="empty") == 1
    counted = {
        (status, error_class): delta(
            after, before, "fetchfleet_results_total", kind="download", status=status, error_class=error_class
        )
        for status, error_class in [("done", ""), ("failed", "transient"), ("failed", "rate_limited")]
    }
    assert counted == {("done", ""): 1, ("failed", "transient"): 1, ("failed", "rate_limited"): 1}
    assert delta(after, before, "fetchfleet_bytes_downloaded_total", site="booru") == 123
    endpoint = {"method": "POST", "endpoint": "/leases"}
    assert delta(after, before, "fetchfleet_http_requests_total", status="400", **endpoint) == 1
    assert delta(after, before, "fetchfleet_http_request_duration_seconds_count", **endpoint) == 3
    assert 100 < after[("fetchfleet_site_cooldown_seconds", (("site", "booru"),))] <= 120
    assert after[("fetchfleet_site_cooldown_seconds", (("site", "tube"),))] == 0


def test_the_task_gauges_are_the_database_counts(client, actions, session):
    from server.models import Task

    actions.import_csv("query,sites\ncats,booru\ndogs,booru tube\n")
    actions.add_download_tasks("booru", 4)
    lease = actions.lease("download", n=2, site="booru").get_json()
    assert lease["tasks"]
    samples = scrape(client)
    gauges = {
        (labels["kind"], labels["site"], labels["state"]): value
        for (name, label_items), value in samples.items()
        if name == "fetchfleet_tasks"
        for labels in [dict(label_items)]
    }
    rows = session.execute(
        select(Task.kind, Task.site, Task.state, func.count()).group_by(Task.kind, Task.site, Task.state)
    )
    assert gauges == {(kind, site, state): count for kind, site, state, count in rows}
    assert Counter(state for (_, _, state) in gauges) == Counter({"queued": 3, "leased": 1})
    assert samples[("fetchfleet_leases_active", ())] == 1
    assert samples[("fetchfleet_tasks_leased", ())] == 2


def test_node_names_need_a_key_and_the_whole_page_does_with_stats_require_key(app_factory):
    app = app_factory()
    actions = Actions(app, app.test_client())
    actions.lease("metadata", who="node7")  # node7 is seen
    public = scrape(app.test_client())
    assert not any(name == "fetchfleet_node_last_seen_timestamp_seconds" for name, _ in public)
    keyed = scrape(app.test_client(), actions.headers("node7"))
    assert ("fetchfleet_node_last_seen_timestamp_seconds", (("node", "node7"),)) in keyed

    closed = app_factory(STATS_REQUIRE_KEY=True)
    answer = closed.test_client().get("/metrics")
    assert answer.status_code == 401 and answer.get_json()["message"]


def test_a_made_up_method_or_path_adds_no_label_value_of_its_own(client):
    """Labels are bounded: a caller's method names and paths do not become series."""
    for number in range(3):
        client.open(f"/no/such/path/{number}", method=f"BREW{number}")
    samples = scrape(client)
    methods = {dict(labels).get("method") for name, labels in samples if name == "fetchfleet_http_requests_total"}
    endpoints = {dict(labels).get("endpoint") for name, labels in samples if name == "fetchfleet_http_requests_total"}
    assert not any(method.startswith("BREW") for method in methods) and "other" in methods
    assert not any("/no/such/path" in endpoint for endpoint in endpoints) and "unmatched" in endpoints
