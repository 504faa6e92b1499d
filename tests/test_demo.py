"""The README's first command: the one-command demo runs the whole loop and cleans up."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from support.processes import REPO_ROOT

#: Real processes (servers, nodes): ``make test-fast`` leaves these out.
pytestmark = pytest.mark.e2e


def run_demo(tmp_path, *args: str, at_the_end=None) -> subprocess.CompletedProcess:
    """``python -m demo`` with nothing of this environment but a PATH. ``at_the_end``: run
    it with a terminal as its stdin, call this with the coordinator's URL once it waits
    for Enter at the end, then press Enter."""
    command = [sys.executable, "-m", "demo", "--no-progress", "--workdir", str(tmp_path / "out"), *args]
    primary = secondary = None
    if at_the_end is not None:
        primary, secondary = os.openpty()
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdin=secondary if secondary is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if secondary is not None:
        os.close(secondary)
    output: dict[str, list[str]] = {"stdout": [], "stderr": []}
    waiting = threading.Event()

    def read(stream, name):
        for line in stream:
            output[name].append(line)
            if "press Enter to stop them" in line:
                waiting.set()

    readers = [threading.Thread(target=read, args=(getattr(process, n), n), daemon=True) for n in output]
    for reader in readers:
        reader.start()
    try:
        if at_the_end is not None:
            assert waiting.wait(timeout=600), "".join(output["stderr"])[-3000:]
            for _ in range(100):  # the other stream's reader may be a moment behind
                urls = re.findall(r"dashboard: (http://127\.0\.0\.1:\d+)/dashboard", "".join(output["stdout"]))
                if urls:
                    break
                time.sleep(0.1)
            assert urls, "".join(output["stdout"])[-3000:]
            at_the_end(urls[0])
            os.write(primary, b"\n")
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
        if primary is not None:
            os.close(primary)
    for reader in readers:
        reader.join(timeout=30)
    process.stdout.close()
    process.stderr.close()
    result = subprocess.CompletedProcess(
        command, process.returncode, "".join(output["stdout"]), "".join(output["stderr"])
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_one_command_demo(tmp_path):
    seen = {}

    def look_around(url):  # in a terminal it waits at the end: the dashboard is up
        seen["dashboard"] = requests.get(url + "/dashboard", timeout=30).status_code
        seen["metrics"] = requests.get(url + "/metrics", timeout=30).text

    result = run_demo(tmp_path, at_the_end=look_around)
    assert seen["dashboard"] == 200 and 'fetchfleet_tasks{kind="download",site="demo",state="done"}' in seen["metrics"]
    stats = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert stats["tasks"]["metadata"]["done"] == 12  # 13 items; "no_such_tag" waits to be retried
    downloads = stats["tasks"]["download"]
    # dead: the 404 post, the 500 post and the hour-long stream over its item's limit
    assert downloads["dead"] == 3 and downloads["queued"] == downloads["leased"] == 0
    assert downloads["done"] == downloads["total"] - 3 > 80
    assert "permanent: over limit: 3600 s > 1800 s" in result.stdout
    files = [
        path
        for path in (tmp_path / "out" / "downloads").rglob("*")
        if path.is_file() and path.suffix != ".json" and ".fetchfleet" not in path.parts
    ]
    assert len(files) == downloads["done"]
    assert {"hls-01.mp4", "hls-02.mp4", "dash-01.mp4"} <= {path.name for path in files}  # streams, merged
    # It ends by showing a pair of near-duplicates it found (the "dupes" posts: 11 and 12, 21 and 22...).
    pair = sorted(int(post) for post in re.findall(r"near-duplicate: post (\d+), \S+, distance \d+", result.stdout))
    assert len(pair) == 2 and pair[1] - pair[0] == 1 and pair[1] % 10 == 2, result.stdout
    # Everything it started is gone: neither the site nor the coordinator answers any more.
    ports = re.findall(r"(?:demo site|coordinator): http://127\.0\.0\.1:(\d+)", result.stderr)
    assert len(ports) == 2, result.stderr
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0


def test_the_demo_into_the_file_store(tmp_path, seaweedfs):
    """``make demo DEMO_ARGS=--store``: every file goes into a local SeaweedFS, none stays on disk."""
    result = run_demo(tmp_path, "--store")
    stats = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    done = stats["tasks"]["download"]["done"]
    assert f"{done} objects" in result.stdout and f"and {done} sidecars in the bucket" in result.stdout
    assert "0 files (0.0 MB) and 0 sidecars under" in result.stdout
    [fetched] = (tmp_path / "out" / "fetched").iterdir()
    assert str(fetched) in result.stdout and fetched.stat().st_size > 0
    ports = re.findall(r"file store: s3://\S+ at http://127\.0\.0\.1:(\d+)", result.stderr)
    assert len(ports) == 1, result.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(ports[0]))) != 0
