"""The OpenAPI document and the coordinator agree, under fuzzing: schemathesis generates
valid and invalid requests for every operation from ``/openapi.json`` and sends them to
the real coordinator (gunicorn, two workers) with an admin key, on both databases.
Nothing may answer 5xx, and every answer must match the document (status code and body).

Bounded in time; the seed is fixed so that CI is repeatable (``FUZZ_SEED`` picks
another, ``FUZZ_SECONDS`` a longer run).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from support.processes import VENV_BIN, start_coordinator
from tests.helpers import TEST_SITES

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(actions, database_url, tmp_path):
    admin = actions.key("ops", admin=True)
    coordinator = start_coordinator(database_url, TEST_SITES, tmp_path, workers=2)
    try:
        command = [
            str(VENV_BIN / "schemathesis"),
            "run",
            coordinator.url + "/openapi.json",
            "--header",
            f"Authorization: Bearer {admin}",
            "--checks",
            CHECKS,
            "--max-time",
            os.environ.get("FUZZ_SECONDS", "40"),
            "--seed",
            os.environ.get("FUZZ_SEED", "20261201"),
            "--workers",
            "2",
            "--no-color",
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        if run.returncode != 0 and _fuzzer_crashed(run.stdout):
            # schemathesis broke inside itself (seen once: CPython's "AST constructor recursion
            # depth mismatch" while it generated a case): not a finding; the same seed again
            run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        coordinator.stop()
    report = run.stdout[-8000:] + run.stderr[-2000:]
    assert run.returncode == 0, report + "\ncoordinator log:\n" + coordinator.log()[-3000:]
    assert " passed" in run.stdout and "generated" in run.stdout, report


def _fuzzer_crashed(output: str) -> bool:
    """A run that found nothing and ended on an error of the fuzzer's own."""
    return "Runtime Error" in output and "unique failure" not in output and "SystemError" in output
