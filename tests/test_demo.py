"""The README's first command: the one-command demo runs the whole loop and cleans up."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from support.processes import REPO_ROOT

#: Real processes (servers, nodes): ``make test-fast`` leaves these out.
pytestmark = pytest.mark.e2e


def run_demo(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """``python -m demo`` with nothing of this environment but a PATH."""
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--no-progress", "--workdir", str(tmp_path / "out"), *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_one_command_demo(tmp_path):
    result = run_demo(tmp_path)
    stats = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert stats["tasks"]["metadata"]["done"] == 8  # 9 items; "no_such_tag" waits to be retried
    downloads = stats["tasks"]["download"]
    assert downloads["dead"] == 2 and downloads["queued"] == downloads["leased"] == 0  # the 404 and the 500 post
    assert downloads["done"] == downloads["total"] - 2 > 80
    files = [
        path
        for path in (tmp_path / "out" / "downloads").rglob("*")
        if path.is_file() and path.suffix != ".json" and ".fetchfleet" not in path.parts
    ]
    assert len(files) == downloads["done"]
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
