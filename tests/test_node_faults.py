"""Faults of the node are the node's, not the task's: a full disk charges no task and
leaves no partial file, a --loop node rides out a coordinator answering 500, and a node
killed with SIGKILL takes its worker processes with it. Real processes throughout.

The full-disk tests mount a small tmpfs as --dest (root only); elsewhere they skip with
the reason, and ``REQUIRE_TMPFS=1`` (set by CI) turns that skip into a failure.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import REPO_ROOT, demo_sites, start_demo_site
from tests.fake_coordinator import FakeCoordinator
from tests.fleet import Fleet, kill_group

#: Real processes (servers, nodes): ``make test-fast`` leaves these out.
pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip() or mounted.returncode}"
        if os.environ.get("REQUIRE_TMPFS") == "1":
            pytest.fail(f"REQUIRE_TMPFS=1 but {reason}")
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up, then give back ``leave`` bytes: a few files fit, then ENOSPC."""
    filler = disk / "filler.bin"
    with open(filler, "wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\xff" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def leftovers(dest: Path) -> list[str]:
    return sorted(
        str(path.relative_to(dest))
        for path in dest.rglob("*")
        if path.name.endswith((".part", ".tmp", ".ytdl")) or (path.parent.name == "partial" and path.is_dir())
    )


@pytest.fixture
def fleet(tmp_path):
    site = start_demo_site(tmp_path)
    fleet = Fleet.start(site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    yield fleet
    fleet.stop()
    site.stop()


def test_a_full_disk_charges_no_task_and_a_loop_node_resumes_when_space_is_freed(fleet, small_disk):
    fleet.import_csv("query,sites\nartist_1,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    dest = small_disk / "dest"
    filler = fill(small_disk, leave=160_000)
    node = fleet.start_client("download", "demo", "10", "--jobs", "2", "--loop", "--dest", str(dest))
    try:
        deadline = time.monotonic() + 60
        while "cannot store files" not in fleet.newest_client_log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "cannot store files" in fleet.newest_client_log(), fleet.newest_client_log()
        time.sleep(2)  # the node hands its tasks back and waits
        downloads = fleet.stats()["tasks"]["download"]
        assert downloads["dead"] == 0 and downloads["done"] < 30, downloads
        tasks = fleet.download_tasks()
        assert all(task["attempts"] == 0 for task in tasks.values()), tasks  # nothing charged
        assert leftovers(dest) == []
        assert node.poll() is None  # a --loop node waits, it does not exit

        filler.unlink()
        fleet.wait_for(lambda s: s["tasks"]["download"]["done"] == 30, timeout=90, what="all downloads after space")
        assert "takes files again: resuming" in fleet.newest_client_log()
        assert all(task["attempts"] == 0 for task in fleet.download_tasks().values())
        assert leftovers(dest) == []
        assert len(fleet.files()) == 30
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(30)


def test_a_one_shot_run_on_a_full_disk_exits_4_and_hands_its_tasks_back(fleet, small_disk):
    fleet.import_csv("query,sites\nartist_1,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    dest = small_disk / "dest"
    fill(small_disk, leave=120_000)
    run = fleet.client("download", "demo", "30", "--jobs", "2", "--dest", str(dest))
    assert run.returncode == 4, run.stdout + run.stderr
    assert "this node cannot store files" in run.stdout and "disk full" in run.stdout, run.stdout
    downloads = fleet.stats()["tasks"]["download"]
    assert downloads["leased"] == 0 and downloads["dead"] == 0 and downloads["done"] + downloads["queued"] == 30
    assert all(task["attempts"] == 0 for task in fleet.download_tasks().values())
    assert leftovers(dest) == []


def test_a_read_only_dest_is_the_node_s_fault_too(fleet, tmp_path, small_disk):
    fleet.import_csv("query,sites\nartist_1,demo\n")
    assert fleet.client("metadata", "10").returncode == 0
    (small_disk / "dest").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    run = fleet.client("download", "demo", "30", "--dest", str(small_disk / "dest"))
    assert run.returncode == 4 and "read-only file system" in run.stderr, run.stdout + run.stderr
    assert fleet.stats()["tasks"]["download"]["queued"] == 30  # nothing leased, nothing charged


def test_a_loop_node_rides_out_a_coordinator_answering_500(tmp_path):
    site = start_demo_site(tmp_path)
    started = time.monotonic()
    sites = demo_sites(site.url)
    lease = {"sites": {"demo": sites["demo"]}, "tasks": [{"id": 1, "site": "demo", "url": site.url + "/post/show/3"}]}

    def failing_for_ten_seconds(path: str) -> int | None:
        return 500 if time.monotonic() - started < 10 else None

    try:
        with FakeCoordinator(leases=[lease], sites=sites, fail=failing_for_ten_seconds) as coordinator:
            env = {name: value for name, value in os.environ.items() if not name.startswith("FETCHFLEET_")}
            (tmp_path / "empty.py").write_text("")
            env["FETCHFLEET_CONFIG"] = str(tmp_path / "empty.py")
            command = [sys.executable, "-m", "client", "--server", coordinator.url, "--key", "k"]
            command += ["download", "demo", "5", "--loop", "--dest", str(tmp_path / "dest")]
            node = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 60
                while 1 not in coordinator.results and time.monotonic() < deadline and node.poll() is None:
                    time.sleep(0.2)
                assert node.poll() is None, node.stderr.read()  # never gave up
                assert coordinator.results.get(1, {}).get("status") == "done", coordinator.results
                assert sum(request == "POST /leases" for request in coordinator.requests) >= 2  # it asked again
            finally:
                node.send_signal(signal.SIGTERM)
                output = node.communicate(timeout=30)[1]
            assert "coordinator answered 500" in output and "trying again" in output, output
    finally:
        site.stop()


def session_processes(session: int) -> list[str]:
    """Processes of a session (``ps`` is not needed: /proc says it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
            found.append(f"{entry.name}: {command!r}")
    return found


def test_sigkill_of_a_node_leaves_none_of_its_processes_behind(tmp_path):
    site = start_demo_site(tmp_path, latency=0.3)
    fleet = Fleet.start(site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    try:
        fleet.import_csv("query,sites\nartist_1,demo\n")
        assert fleet.client("metadata", "10").returncode == 0
        node = fleet.start_client("download", "demo", "30", "--jobs", "3", "--loop")
        deadline = time.monotonic() + 60
        # the node, its fork server and resource tracker, and three workers
        while len(session_processes(node.pid)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(session_processes(node.pid)) >= 6, session_processes(node.pid)
        os.kill(node.pid, signal.SIGKILL)  # the node alone, as the OOM killer or a crash would
        node.wait(10)
        deadline = time.monotonic() + 5
        while session_processes(node.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_processes(node.pid) == []
    finally:
        kill_group(node) if "node" in locals() else None
        fleet.stop()
        site.stop()


def test_partial_files_of_killed_jobs_are_removed_at_the_next_start_and_live_ones_kept(tmp_path):
    from client.storage import PARTIAL_DIR, remove_abandoned_partials

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    partials = tmp_path / PARTIAL_DIR
    for owner in (dead.pid, os.getpid()):
        (partials / f"{owner}-1").mkdir(parents=True)
        (partials / f"{owner}-1" / "1.png.part").write_bytes(b"half")
    assert remove_abandoned_partials(tmp_path) == 1
    assert sorted(path.name for path in partials.iterdir()) == [f"{os.getpid()}-1"]
