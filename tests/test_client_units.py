"""The client's parts on their own, without worker processes: failure classification,
Retry-After, site vetting, the result sender and the heartbeat against a coordinator
that answers what each test needs (real HTTP on loopback, served from a thread)."""

from __future__ import annotations

import errno
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from client.coordinator import Coordinator
from client.engines.base import classify_http, clean_text, json_safe, node_fault_of, parse_retry_after
from client.heartbeat import Heartbeat
from client.kinds import KindOfWork
from client.reporting import ResultSender, Summary, human_bytes
from client.trust import SiteVetting, url_refusal
from tests.fake_coordinator import FakeCoordinator


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [("120", 120, 120), ("0", 0, 0), ("-5", 0, 0), ("soon", None, None), (None, None, None), ("nan", None, None)],
)
def test_retry_after_in_seconds(header, low, high):
    seconds = parse_retry_after(header)
    assert seconds is None if low is None else low <= seconds <= high


def test_retry_after_as_an_http_date():
    moment = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 <= parse_retry_after(moment) <= 91


@pytest.mark.parametrize(
    ("responses", "error_class", "retry_after"),
    [
        ([(200, "u", None)], None, None),
        ([(404, "u", None)], "permanent", None),
        ([(418, "u", None)], "transient", None),
        ([(404, "a", None), (503, "b", None)], "transient", None),
        ([(503, "a", None), (429, "b", "30"), (429, "c", "60")], "rate_limited", 60),
        ([(429, "b", None)], "rate_limited", None),
    ],
)
def test_the_worst_http_status_of_a_job_decides(responses, error_class, retry_after):
    failure = classify_http(responses)
    if error_class is None:
        assert failure is None
    else:
        assert failure.error_class == error_class and failure.retry_after == retry_after


def test_disk_conditions_are_node_faults_and_other_errors_are_not():
    assert "disk full" in str(node_fault_of(OSError(errno.ENOSPC, "No space left on device")))
    try:
        raise RuntimeError("a job failed") from OSError(errno.EROFS, "Read-only file system")
    except RuntimeError as wrapped:
        assert "read-only" in str(node_fault_of(wrapped))
    assert node_fault_of("Unable to download data:  OSError: [Errno 122] Disk quota exceeded") is not None
    assert node_fault_of(OSError(errno.ECONNRESET, "reset")) is None
    assert node_fault_of("HTTP 404 for http://x/") is None


def test_site_text_is_made_storable_on_the_node_too():
    assert clean_text("a\0b\ud800c") == "abc"
    assert json_safe({"k\0": ["v\0", {"_private": 1}], "_x": 2}) == {"k": ["v", {}]}


def test_vetting_refuses_once_and_tells_each_task_why(caplog):
    vetting = SiteVetting()
    evil = {"engine": "yt-dlp", "options": {"cookiefile": "/x"}}
    with caplog.at_level("WARNING", logger="fetchfleet"):
        vetting.add({"tube": evil})
        vetting.add({"tube": evil})  # the same description again: not logged twice
    assert len(caplog.records) == 1 and "refusing site 'tube'" in caplog.records[0].getMessage()
    assert vetting.refusal_for({"site": "tube", "url": "http://t/1"}).startswith("refused by this node: options.")
    assert vetting.refusal_for({"site": "other", "url": "http://t/1"}).endswith("did not describe site 'other'")
    vetting.add({"tube": {"engine": "yt-dlp", "options": {"format": "best"}}})  # fixed by the operator
    assert vetting.refusal_for({"site": "tube", "url": "http://t/1"}) is None
    assert url_refusal("file:///etc/passwd").startswith("refused by this node: only http and https")


def test_the_sender_batches_tallies_and_keeps_what_it_could_not_deliver():
    failing = {"on": True}
    with FakeCoordinator(fail=lambda path: 500 if failing["on"] else None) as fake:
        coordinator = Coordinator(fake.url, "k", retries=0)
        sender = ResultSender(coordinator, "lease-1", batch=2)
        done = {"task_id": 1, "status": "done", "files": [{"size": 5}], "found": []}
        assert sender.add(done) is None and fake.results == {}  # below the batch: not sent yet
        assert sender.flush() is None and not sender.delivered  # 500: kept for a retry
        failing["on"] = False
        failed = {"task_id": 2, "status": "failed", "error_class": "transient", "error": "x"}
        tally = sender.add(failed)  # the batch is full: both go out
        coordinator.close()
    assert sender.delivered and set(fake.results) == {1, 2}
    assert (tally.done, dict(tally.failed), tally.bytes) == (1, {"transient": 1}, 5)
    summary = Summary(kind="download", site="demo", tasks=2)
    summary.count(tally)
    assert summary.line().startswith("download demo: 1 done, 1 failed (1 transient), 5 B")
    assert summary.exit_code() == 1 and human_bytes(12_300_000) == "12.3 MB"


def test_a_heartbeat_stops_quietly_when_the_lease_ended_and_says_so_when_it_was_lost():
    answers = {"status": 409}
    with FakeCoordinator(fail=lambda path: answers["status"] if path.endswith("/extend") else None) as fake:
        coordinator = Coordinator(fake.url, "k", retries=0)
        lost = Heartbeat(coordinator, "lease-1", lease_seconds=1.5)
        lost.start()
        lost.join(5)
        assert lost.lost.is_set()  # a 409 without a final state: someone else holds the tasks now
        answers["status"] = None
        alive = Heartbeat(coordinator, "lease-2", lease_seconds=1.5)
        alive.start()
        time.sleep(1.2)
        alive.stop()
        coordinator.close()
    assert not alive.lost.is_set() and fake.requests.count("POST /leases/lease-2/extend") >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["metadata", "0"], "0 is not in the range 1<=x<=100"),
        (["metadata", "abc"], "'abc' is not a valid integer"),
        (["metadata", "101"], "101 is not in the range"),
        (["download", "demo"], "Missing argument 'N'"),
        (["download", "demo", "5", "--jobs", "0"], "0 is not in the range 1<=x<=64"),
        (["--server", "ftp://x", "metadata", "5"], "SERVER_URL must be an http(s) URL"),
    ],
)
def test_usage_errors_exit_2_with_one_readable_line(args, message, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from client.cli import main

    (tmp_path / "empty.py").write_text("")
    monkeypatch.setenv("FETCHFLEET_CONFIG", str(tmp_path / "empty.py"))
    result = CliRunner().invoke(main, ["--key", "k", *args])
    assert result.exit_code == 2 and message in result.output, result.output


# ------------------------------------------------------------- the runner's loop


class ThreadPool:
    """The worker pool's interface over threads: the runner's loop without processes."""

    def __init__(self, jobs, settings, sites):
        from concurrent.futures import ThreadPoolExecutor

        self.sites = sites
        self._executor = ThreadPoolExecutor(jobs)

    def knows(self, sites):
        return all(self.sites.get(name) == info for name, info in sites.items())

    def submit(self, function, *args):
        return self._executor.submit(function, *args)

    def close(self):
        self._executor.shutdown(wait=True)

    kill = close


class ScriptedWork(KindOfWork):
    """A kind of work whose job answers from a script: task id -> result status. "held":
    done, but its files wait for the file store until ``uploaded`` is set; ``outage`` says
    the store cannot be reached meanwhile."""

    kind = "download"

    def __init__(self, script: dict[int, str], dest=None):
        self.script = script
        self.dest = dest
        self.remembered: list[int] = []
        self.ended = 0
        self.held: dict[int, dict] = {}
        self.uploaded = threading.Event()
        self.outage: str | None = None

    def shortcuts(self, tasks):
        return {}

    def job(self, task):
        return self.run, (task,)

    def run(self, task):
        answer = self.script[task["id"]]
        if answer == "done":
            return {"task_id": task["id"], "status": "done", "files": [{"path": "s/1", "size": 3}]}
        if answer == "disk full":
            return {"task_id": task["id"], "status": "node_fault", "error": "disk full: [Errno 28]"}
        if answer == "held":
            done = {"task_id": task["id"], "status": "done", "files": [{"path": "s/1", "size": 3}]}
            return {"task_id": task["id"], "status": "upload_pending", "error": "store down", "result": done}
        return {"task_id": task["id"], "status": "failed", "error_class": answer, "error": "HTTP 404"}

    def remember(self, task, result):
        self.remembered.append(task["id"])

    def lease_ended(self):
        self.ended += 1

    def hold(self, task, result):
        self.held[task["id"]] = (task, result["result"])

    def completed(self):
        if not self.uploaded.is_set():
            return []
        done, self.held = list(self.held.values()), {}
        return done

    def holding_problem(self):
        return self.outage

    def close(self):
        pass


SITE = {"demo": {"engine": "gallery-dl", "options": {}}}


def lease_of(*ids: int, site: str = "demo") -> dict:
    return {
        "sites": {site: SITE.get(site, {"engine": "gallery-dl"})},
        "tasks": [{"id": i, "site": site, "url": f"http://d/{i}"} for i in ids],
    }


def run_runner(fake: FakeCoordinator, work: ScriptedWork, mode: str = "drain"):
    from client.runner import Runner

    coordinator = Coordinator(fake.url, "k", retries=0)
    runner = Runner(coordinator, work=work, n=10, settings={}, site="demo", jobs=2, mode=mode, pool_factory=ThreadPool)
    try:
        return runner.run()
    finally:
        coordinator.close()


def test_the_runner_leases_runs_and_reports_every_task_of_every_lease():
    work = ScriptedWork({1: "done", 2: "permanent", 3: "done"})
    with FakeCoordinator(leases=[lease_of(1, 2), lease_of(3)], sites=SITE) as fake:
        summary = run_runner(fake, work)
    assert {task_id: result["status"] for task_id, result in fake.results.items()} == {
        1: "done",
        2: "failed",
        3: "done",
    }
    assert (summary.leases, summary.done, dict(summary.failed), summary.bytes) == (2, 2, {"permanent": 1}, 6)
    assert sorted(work.remembered) == [1, 2, 3] and work.ended == 2 and summary.exit_code() == 1


def test_a_node_fault_hands_the_lease_back_uncharged_and_a_one_shot_run_exits_4(tmp_path):
    work = ScriptedWork({1: "disk full", 2: "done"}, dest=tmp_path)
    with FakeCoordinator(leases=[lease_of(1, 2)], sites=SITE) as fake:
        summary = run_runner(fake, work, mode="once")
    assert 1 not in fake.results and 1 in fake.released  # never reported as failed: handed back
    assert summary.node_fault.startswith("disk full") and summary.exit_code() == 4


def test_a_download_held_for_the_file_store_is_reported_only_once_uploaded():
    work = ScriptedWork({1: "held", 2: "done"})
    threading.Timer(1.0, work.uploaded.set).start()
    with FakeCoordinator(leases=[lease_of(1, 2)], sites=SITE) as fake:
        summary = run_runner(fake, work, mode="drain")
    assert fake.results[1]["status"] == "done" and fake.results[2]["status"] == "done"
    assert 1 not in fake.released and summary.exit_code() == 0


def test_a_one_shot_run_does_not_wait_out_a_store_outage_it_hands_the_held_task_back():
    work = ScriptedWork({1: "held", 2: "done"})
    work.outage = "store down"
    with FakeCoordinator(leases=[lease_of(1, 2)], sites=SITE) as fake:
        summary = run_runner(fake, work, mode="once")
    assert 1 not in fake.results and 1 in fake.released and fake.results[2]["status"] == "done"
    assert summary.held == 1 and summary.exit_code() == 4
    assert "1 waiting on this node for the file store" in summary.line() and "store down" in summary.line()


def test_tasks_of_a_refused_site_fail_without_a_job():
    work = ScriptedWork({})  # any job would raise KeyError
    hostile = {
        "sites": {"demo": {"engine": "yt-dlp", "options": {"cookiefile": "/etc/x"}}},
        "tasks": [{"id": 5, "site": "demo", "url": "http://d/5"}],
    }
    with FakeCoordinator(leases=[hostile], sites={}) as fake:
        run_runner(fake, work)
    assert fake.results[5]["error_class"] == "permanent"
    assert fake.results[5]["error"].startswith("refused by this node: options.cookiefile")


def test_upload_existing_walks_only_sidecars_it_can_trust(tmp_path):
    from client.upload_existing import existing_files

    site = tmp_path / "demo"
    site.mkdir()
    good = {"fetchfleet": {"task_id": 1, "site": "demo", "remote_id": "1", "sha256": "ab" * 32}}
    for name, document in {"1.png": good, "2.png": {"fetchfleet": {**good["fetchfleet"], "site": "../x"}}}.items():
        (site / name).write_bytes(b"x")
        (site / f"{name}.json").write_text(json.dumps(document))
    (site / "3.png").write_bytes(b"x")
    (site / "3.png.json").write_text("{not json")
    unreadable: list[str] = []
    assert [found.relative for found in existing_files(tmp_path, unreadable)] == ["demo/1.png"]
    assert unreadable == ["demo/2.png", "demo/3.png"]
