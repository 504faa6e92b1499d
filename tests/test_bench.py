"""The benchmark harness, smoke-sized: it runs and produces every figure.

No timing thresholds here (the machines are noisy): the targets are judged in the full
run's results, side by side, in ``bench/results/latest.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from bench import report
from bench.__main__ import SECTIONS
from support.processes import REPO_ROOT


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def require_redis() -> None:
    """The smoke run measures RQ on the local Redis too (REQUIRE_REDIS=1, as in CI, fails instead of skipping)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return
    except OSError as error:
        reason = f"Redis is not reachable at 127.0.0.1:6379 (the RQ comparator needs it): {error}"
    if os.environ.get("REQUIRE_REDIS") == "1":
        pytest.fail(f"REQUIRE_REDIS=1 but {reason}")
    pytest.skip(reason)


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench / make test install it)")
def test_smoke_run_produces_every_figure(tmp_path, postgres_url, seaweedfs):
    require_redis()
    readme_before = (REPO_ROOT / "README.md").read_text()
    result = _bench("--smoke", "--output", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    runs = data["throughput"]["runs"]
    for backend in ("sqlite", "postgresql"):
        for app in ("real", "ceiling"):
            configs = {
                (run["connections"], run["batch"]) for run in runs if (run["backend"], run["app"]) == (backend, app)
            }
            assert configs == {(c, b) for c in (1, 4, 16) for b in (1, 10, 100)}, (backend, app)
        every = [run for run in runs if (run["backend"], run["app"]) == (backend, "ceiling_all")]
        assert [(run["connections"], run["batch"]) for run in every] == [(16, 100)], backend
    assert all(run["tasks"] > 0 and run["errors"] == 0 for run in runs), [r for r in runs if not r["tasks"]]
    assert {row["backend"] for row in data["throughput"]["lean_ceiling"]} == {"sqlite", "postgresql"}
    assert all(row["tasks_per_second"] > 0 for row in data["throughput"]["database_only"])
    domain = data["throughput"]["domain_only"]
    assert {row["backend"] for row in domain} == {"sqlite", "postgresql"}
    assert all(row["tasks_per_second"] > 0 and row["cpu_ms_per_cycle"] > 0 for row in domain)
    assert data["throughput"]["rq"]["left_in_queue"] == 0 and data["throughput"]["rq"]["end_to_end_per_second"] > 0
    for backend in ("sqlite", "postgresql"):
        sizes = data["scaling"][backend]["sizes"]
        assert [row["queued"] for row in sizes] == [1_000, 2_000, 5_000] and all(row["p50_ms"] > 0 for row in sizes)
        waiting = data["scaling"][backend]["subscriptions"]
        assert [row["subscriptions"] for row in waiting] == [100, 1_000] and all(row["p50_ms"] > 0 for row in waiting)
    pipeline = data["pipeline"]
    for variant in ("gallery_dl_1", "gallery_dl_8", "client_1", "client_8"):
        assert pipeline[variant]["files"] == pipeline["files"], (variant, pipeline[variant])
    assert pipeline["client_8"]["peak_rss_bytes"]["with_workers"] > pipeline["client_8"]["peak_rss_bytes"]["parent"]
    for backend in ("sqlite", "postgresql"):
        assert data["memory"][backend]["total_rss_bytes"] > 0
    catalogue = data["catalogue"]
    [similar] = catalogue["in_process"]
    assert similar["hashes"] == 10_000 and [row["distance"] for row in similar["distances"]] == [4, 8, 12]
    assert all(row["index"]["p50_ms"] > 0 and row["numpy_scan"]["p50_ms"] > 0 for row in similar["distances"])
    assert all(row["p50_ms"] > 0 for row in catalogue["sql_scan"][0]["distances"])
    [endpoint] = catalogue["endpoint"]
    assert endpoint["first_answer_seconds"] > 0 and 0 < endpoint["freshness"]["max_seconds"] < 30
    assert [(row["backend"], row["files"]) for row in catalogue["lookups"]] == [
        (backend, size) for backend in ("sqlite", "postgresql") for size in (1_000, 5_000)
    ]
    assert all(row["ratio"] > 0 for row in catalogue["skip_known"])
    store = data["file_store"]
    assert [len(store["runs"][mode]) for mode in ("off", "on")] == [1, 1]
    assert all(run["files"] == store["files"] for mode in ("off", "on") for run in store["runs"][mode])
    assert store["runs"]["off"][0]["store_received_bytes"] == 0 < store["runs"]["on"][0]["store_received_bytes"]
    assert store["second_node"]["objects_after"] == store["second_node"]["objects_before"] == 2 * store["files"]
    events = {row["events"] for row in data["throughput"]["domain_only"] + data["throughput"]["domain_only_events"]}
    assert events == {False, True} and len(data["throughput"]["domain_only_events"]) == 4  # 2 runs x 2 backends
    assert {row["backend"] for row in data["throughput"]["kept_counts"]} == {"sqlite", "postgresql"}
    assert all(len(row["with"]) == len(row["without"]) == 1 for row in data["throughput"]["kept_counts"])
    for backend, scaled in data["scaling"].items():
        assert all(row["stats"]["p50_ms"] > 0 and row["recount_seconds"] >= 0 for row in scaled["sizes"]), backend
    assert data["scaling"]["sqlite"]["move_to_postgresql"]["rows"] >= 2_000
    for backend, imported in data["inventory"].items():
        assert imported["new"]["summary"].startswith("added 5000,"), (backend, imported["new"])
        assert imported["unchanged"]["summary"].startswith("added 0, updated 0, unchanged 5000"), backend
        assert imported["changed_10_percent"]["summary"].startswith("added 0, updated 500,"), backend
        assert imported["floor"]["rows_per_second"] > 0 and imported["small"]["peak_rss_bytes"] > 0
    video = data["video"]
    assert video["videos"] == 4 and all(len(runs) == 1 for runs in video["seconds"].values())
    assert video["client_1_vs_yt_dlp_1"] > 0 and video["client_4_vs_yt_dlp_4"] > 0
    assert len(data["targets"]) == 39 and all(row["measured"] is not None for row in data["targets"])
    table = (tmp_path / "latest.md").read_text()
    for heading in (
        "## Targets",
        "## Coordinator throughput",
        "## Lease and /stats latency",
        "## What the kept counts cost",
        "## Inventory import",
        "## Client pipeline",
        "## Video: 4 HLS streams",
        "## Memory",
        "## Near-duplicate search",
        "## Catalogue lookups",
        "## File store",
    ):
        assert heading in table
    assert "## What bounds it" in table and "CPU ms per 100-task cycle" in table
    spent = data["environment"]["section_seconds"]  # what each section costs of the budget
    assert list(spent) == list(SECTIONS) and all(seconds >= 0 for seconds in spent.values())
    assert "Minutes per section: throughput " in table
    assert "| sqlite, ceiling app, every statement |" in table and "(ceiling app, every statement) | 16 | 100" in table
    # A smoke run elsewhere leaves the README's numbers alone.
    assert (REPO_ROOT / "README.md").read_text() == readme_before

    # --render rebuilds the markdown from the JSON alone, identically.
    (tmp_path / "latest.md").unlink()
    rendered = _bench("--render", "--output", str(tmp_path))
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert (tmp_path / "latest.md").read_text() == table

    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{report.README_START}\nold numbers\n{report.README_END}\n\n## after\n")
    assert report.update_readme(readme, data)
    text = readme.read_text()
    assert text.startswith("# intro\n\n" + report.README_START) and text.endswith(report.README_END + "\n\n## after\n")
    assert "old numbers" not in text and data["environment"]["date"] in text and "| target | measured |" in text
    assert report.update_readme(readme, data) and readme.read_text() == text  # idempotent


def test_render_without_results_is_a_clear_error(tmp_path):
    result = _bench("--render", "--output", str(tmp_path))
    assert result.returncode != 0
    assert "latest.json does not exist" in result.stderr and "Traceback" not in result.stderr


def test_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no benchmark block here\n")
    assert not report.update_readme(readme, {"environment": {}, "targets": []})
    assert readme.read_text() == "# no benchmark block here\n"


def test_a_section_run_alone_merges_into_the_full_run_and_is_named(tmp_path):
    """``--merge``: the sections of a run with ``--only`` replace the full run's, the table's
    date line names them with their commit and date, and everything else stays."""
    full, again = tmp_path / "full", tmp_path / "again"
    full.mkdir()
    again.mkdir()
    shutil.copy(REPO_ROOT / "bench" / "results" / "latest.json", full / "latest.json")
    before = json.loads((full / "latest.json").read_text())
    inventory = json.loads(json.dumps(before["inventory"]))
    inventory["sqlite"]["new"]["rows_per_second"] = 123_457
    section = {
        "smoke": False,
        "environment": {
            "commit": "abc1234",
            "date": "2026-12-05T13:00:00+00:00",
            "section_seconds": {"inventory": 300},
        },
        "inventory": inventory,
    }
    (again / "latest.json").write_text(json.dumps(section))

    merged = _bench("--merge", str(again), "--output", str(full))
    assert merged.returncode == 0, merged.stderr[-3000:]
    results = json.loads((full / "latest.json").read_text())
    assert results["inventory"] == inventory and results["throughput"] == before["throughput"]
    # the other sections re-run alone before stay named as they were
    assert results["environment"]["reruns"] == before["environment"].get("reruns", {}) | {
        "inventory": {"commit": "abc1234", "date": "2026-12-05T13:00:00+00:00", "seconds": 300}
    }
    table = (full / "latest.md").read_text()
    assert "re-run alone since (their figures replace the full run's): inventory at abc1234 (2026-12-05" in table
    assert "| sqlite: import-csv, new rows/s (1,000,000 rows) | 123,457 |" in table

    section["smoke"] = True
    (again / "latest.json").write_text(json.dumps(section))
    refused = _bench("--merge", str(again), "--output", str(full))
    assert refused.returncode != 0 and "--smoke run" in refused.stderr and "Traceback" not in refused.stderr
    assert json.loads((full / "latest.json").read_text()) == results  # left as it was
