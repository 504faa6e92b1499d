"""Task transitions as pure functions: what a result makes of a leased task, with no
database (the lease operations write what these return)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from common.states import TaskState
from server.policy import LeasePolicy
from server.settings import DEFAULTS
from server.sites import SiteRegistry
from server.transitions import failed, fresh_start, metadata_done
from tests.helpers import TEST_SITES

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = LeasePolicy.from_config({**DEFAULTS, "DOWNLOAD_MAX_ATTEMPTS": 3, "METADATA_MAX_ATTEMPTS": 2})
SITES = SiteRegistry.from_config(TEST_SITES)


def leased(kind: str = "download", attempts: int = 0, **extra):
    values = {"id": 7, "kind": kind, "site": "booru", "state": TaskState.LEASED, "attempts": attempts}
    values |= {"item_id": 3, "priority": 5, "error_class": None, "last_error": None, "last_error_at": None}
    values |= {"check_every": None, "check_count": None}
    return SimpleNamespace(**(values | extra))


@pytest.mark.parametrize(
    ("error_class", "attempts", "state", "charged"),
    [
        ("permanent", 0, "dead", 1),
        ("transient", 0, "queued", 1),
        ("transient", 2, "dead", 1),
        ("rate_limited", 2, "queued", 0),
    ],
)
def test_a_failure_by_its_class(error_class, attempts, state, charged):
    result = {"status": "failed", "error_class": error_class, "error": "HTTP 5xx", "retry_after": 120}
    change = failed(leased(attempts=attempts), result, lease_id="L", policy=POLICY, now=NOW)
    assert change.values["state"] == state and change.values["attempts"] == attempts + charged
    assert change.values["result_lease_id"] == "L" and change.values["lease_id"] is None
    if error_class == "rate_limited":  # the site cools down; the task waits with it, uncharged
        assert change.cooldown == (NOW + timedelta(seconds=120), "HTTP 5xx")
        assert change.values["available_at"] == NOW + timedelta(seconds=120)
    else:
        assert change.cooldown is None


def test_a_resolution_that_found_posts_makes_their_download_tasks():
    found = [
        {"site": "booru", "remote_id": 11, "metadata": {"id": 11}},
        {"site": "tube", "remote_id": "v", "url": "http://tube.test/v"},
    ]
    change = metadata_done(
        leased("metadata"), {"found": found}, lease_id="L", done_by=2, policy=POLICY, sites=SITES, now=NOW
    )
    assert change.values["state"] == "done" and change.values["found_count"] == 2 and change.values["done_by"] == 2
    assert [(row["site"], row["remote_id"], row["url"]) for row in change.new_downloads] == [
        ("booru", "11", "http://booru.test/post/show/11"),  # from the site's post_url
        ("tube", "v", "http://tube.test/v"),
    ]
    assert all(row["priority"] == 5 and row["item_id"] == 3 for row in change.new_downloads)


def test_finding_nothing_is_tried_again_then_not_found():
    first = metadata_done(
        leased("metadata"), {"found": []}, lease_id="L", done_by=2, policy=POLICY, sites=SITES, now=NOW
    )
    assert first.values["state"] == "queued" and first.values["available_at"] > NOW and not first.new_downloads
    last = metadata_done(
        leased("metadata", attempts=1), {"found": []}, lease_id="L", done_by=2, policy=POLICY, sites=SITES, now=NOW
    )
    assert last.values["state"] == "not_found" and last.values["attempts"] == 2


def test_a_fresh_start_keeps_nothing_of_an_old_result():
    values = fresh_start(NOW)
    assert values["state"] == "queued" and values["attempts"] == 0 and values["available_at"] == NOW
    assert all(values[name] is None for name in ("done_by", "done_at", "found_count", "last_error", "lease_id"))
