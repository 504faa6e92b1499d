"""Admin commands through Flask's CLI runner: output, exit codes, and what they change."""

from __future__ import annotations

import json


def test_import_csv_reports_counts_and_rejections(runner, tmp_path, actions):
    inventory = tmp_path / "inventory.csv"
    inventory.write_bytes("\ufeffquery,priority\ncats,1\ndogs,high\n".encode())
    result = runner.invoke(args=["import-csv", str(inventory)])
    assert result.exit_code == 1
    assert "rejected line 3: priority must be an integer, got 'high'" in result.stderr
    assert result.stdout.strip() == "added 1, updated 0, unchanged 0, rejected 1"
    inventory.write_text("query,priority\ncats,1\n")
    again = runner.invoke(args=["import-csv", str(inventory)])
    assert again.exit_code == 0 and again.stdout.strip() == "added 0, updated 0, unchanged 1, rejected 0"


def test_import_csv_bad_header_and_missing_file(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("title\nx\n")
    result = runner.invoke(args=["import-csv", str(bad)])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: csv.header: needs a 'url' or a 'query' column; found: title"
    )
    missing = runner.invoke(args=["import-csv", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "No such file or directory" in missing.output


def test_import_csv_not_utf8_rejects_that_row_keeps_the_rest_and_exits_1(runner, tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("query\ncats\ncaf\xe9\ndogs\n".encode("latin-1"))
    result = runner.invoke(args=["import-csv", str(latin)])
    assert result.exit_code == 1
    assert "rejected line 3: malformed CSV: line 3 is not valid UTF-8 (byte 0xe9 at column 4)" in result.stderr
    assert result.stdout.strip() == "added 2, updated 0, unchanged 0, rejected 1"


def test_tasks_list_requeue_and_reclaim(runner, actions):
    task_ids = actions.add_download_tasks("booru", 2)
    lease = actions.lease("download", 2, site="booru").get_json()
    actions.submit(
        lease["lease_id"],
        [{"task_id": task_ids[0], "status": "failed", "error_class": "permanent", "error": "HTTP 404"}],
    )
    listed = runner.invoke(args=["tasks", "list"])
    assert listed.exit_code == 0
    [line] = listed.stdout.strip().splitlines()
    assert line.startswith(f"{task_ids[0]}\tdownload\tbooru\tdead\tattempts 1\tpermanent: HTTP 404")
    as_json = runner.invoke(args=["tasks", "list", "--state", "leased", "--json"])
    assert [json.loads(row)["id"] for row in as_json.stdout.splitlines()] == [task_ids[1]]
    refused = runner.invoke(args=["tasks", "requeue"])
    assert refused.exit_code == 2 and "name the tasks" in refused.stderr
    requeued = runner.invoke(args=["tasks", "requeue", "--state", "dead", "--site", "booru"])
    assert requeued.exit_code == 0 and requeued.stdout.strip() == "requeued 1 task(s) (0 metadata, 1 download)"
    assert actions.task(task_ids[0]).state == "queued"
    assert runner.invoke(args=["tasks", "reclaim"]).stdout.strip() == "reclaimed 0 task(s)"


def test_list_keys_and_stats(runner, actions):
    actions.key("node1")
    keys = runner.invoke(args=["list-keys"])
    assert keys.stdout.startswith("node1\tclient\tactive\tlast seen never")
    stats = json.loads(runner.invoke(args=["stats"]).stdout)
    assert stats["items"]["total"] == 0 and stats["clients"][0]["name"] == "node1"
