"""The benchmark harness, smoke-sized: it runs and produces every figure.

No timing thresholds here (the machines are noisy): the targets are judged in the full
run's results, side by side, in ``bench/results/latest.md``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from demo.processes import REPO_ROOT


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench / make test install it)")
def test_smoke_run_produces_every_figure(tmp_path, postgres_url):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    runs = data["throughput"]["runs"]
    for backend in ("sqlite", "postgresql"):
        for app in ("real", "ceiling"):
            configs = {
                (run["connections"], run["batch"]) for run in runs if (run["backend"], run["app"]) == (backend, app)
            }
            assert configs == {(c, b) for c in (1, 4, 16) for b in (1, 10, 100)}, (backend, app)
    assert all(run["tasks"] > 0 and run["errors"] == 0 for run in runs), [r for r in runs if not r["tasks"]]
    assert {row["backend"] for row in data["throughput"]["lean_ceiling"]} == {"sqlite", "postgresql"}
    assert all(row["tasks_per_second"] > 0 for row in data["throughput"]["database_only"])
    assert data["throughput"]["rq"]["left_in_queue"] == 0 and data["throughput"]["rq"]["end_to_end_per_second"] > 0
    for backend in ("sqlite", "postgresql"):
        sizes = data["scaling"][backend]["sizes"]
        assert [row["queued"] for row in sizes] == [1_000, 2_000, 5_000] and all(row["p50_ms"] > 0 for row in sizes)
    pipeline = data["pipeline"]
    for variant in ("gallery_dl_1", "gallery_dl_8", "client_1", "client_8"):
        assert pipeline[variant]["files"] == pipeline["files"], (variant, pipeline[variant])
    assert pipeline["client_8"]["peak_rss_bytes"]["with_workers"] > pipeline["client_8"]["peak_rss_bytes"]["parent"]
    for backend in ("sqlite", "postgresql"):
        assert data["memory"][backend]["total_rss_bytes"] > 0
    assert len(data["targets"]) == 10 and all(row["measured"] is not None for row in data["targets"])
    table = (tmp_path / "latest.md").read_text()
    for heading in ("## Targets", "## Coordinator throughput", "## Lease latency", "## Client pipeline", "## Memory"):
        assert heading in table
