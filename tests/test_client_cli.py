"""The node's command line before any work: help with no settings at all, and the same
CLI as ``python client.py`` from the repository root (the product card's spelling)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.processes import REPO_ROOT

#: Real processes (servers, nodes): ``make test-fast`` leaves these out.
pytestmark = pytest.mark.e2e

SPELLINGS = {"python -m client": [sys.executable, "-m", "client"], "python client.py": [sys.executable, "client.py"]}


def run(command: list[str], tmp_path, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    (tmp_path / "empty.py").write_text("")
    env = {name: value for name, value in os.environ.items() if not name.startswith("FETCHFLEET_")}
    env["FETCHFLEET_CONFIG"] = str(tmp_path / "empty.py")  # a new node: no key, nothing configured
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("args", [["--help"], ["metadata", "--help"], ["download", "--help"], ["cache", "--help"]])
def test_help_works_with_no_settings_at_all(tmp_path, spelling, args):
    shown = run([*SPELLINGS[spelling], *args], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage: ") and "Options:" in shown.stdout


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_both_spellings_fail_the_same_way_in_one_line(tmp_path, spelling):
    no_key = run([*SPELLINGS[spelling], "metadata", "5"], tmp_path)
    assert no_key.returncode == 2 and no_key.stderr.strip().splitlines() == [
        "error: no API key: pass --key, or set API_KEY in config.py or FETCHFLEET_API_KEY"
    ]
    unreachable = run([*SPELLINGS[spelling], "--server", "http://127.0.0.1:9", "--key", "k", "metadata", "5"], tmp_path)
    assert unreachable.returncode == 3 and "cannot reach the coordinator" in unreachable.stderr
    usage = run([*SPELLINGS[spelling], "download", "demo", "0"], tmp_path)
    assert usage.returncode == 2 and "N" in usage.stderr


def test_client_py_runs_from_any_directory(tmp_path):
    shown = run([sys.executable, str(REPO_ROOT / "client.py"), "--version"], tmp_path, cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("fetchfleet client, version")
