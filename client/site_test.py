"""``python -m client test-site``: a site's health test (hydownloader's download tests). The
coordinator's ``SITES[...]["test"]`` names what to resolve and what it must yield; the node
resolves and downloads it with its own engines and settings into a temporary folder (never
``--dest``, the node's archive or the metadata cache), checks each expectation and reports
the outcome to the coordinator."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from common.engine_options import Refused, vet_site
from common.states import ResultStatus, TaskKind

from . import worker
from .pool import WorkerPool

#: Longest a test's resolution or one download may take.
JOB_TIMEOUT = 600


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""

    def line(self, site: str) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {site}: {self.name}" + (f": {self.detail}" if self.detail else "")

    def as_wire(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail[:2000]}


@dataclass
class SiteTest:
    site: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


def run_site_test(name: str, description: dict[str, Any], settings: dict[str, Any]) -> SiteTest:
    """Run one site's test as ``GET /sites`` describes it."""
    outcome = SiteTest(name)
    test = description["test"]
    try:
        vetted = vet_site(name, {"engine": description.get("engine"), "options": description.get("options") or {}})
    except Refused as refusal:
        outcome.checks.append(Check("the site's options", False, f"refused by this node: {refusal}"))
        return outcome
    pool = WorkerPool(1, settings, {name: vetted})
    try:
        with tempfile.TemporaryDirectory(prefix="fetchfleet-test-site-") as folder:
            _resolve_and_download(pool, name, description, test, folder, outcome)
    finally:
        pool.close()
    return outcome


def _resolve_and_download(pool, name, description, test, folder, outcome: SiteTest) -> None:
    task = {"id": 0, "kind": TaskKind.METADATA, "site": name, "url": test["url"], "remote_id": None, "metadata": None}
    result = pool.submit(worker.resolve, task).result(JOB_TIMEOUT)
    if result["status"] != ResultStatus.DONE:
        outcome.checks.append(Check(f"resolve {test['url']}", False, f"{result['error_class']}: {result['error']}"))
        return
    found = result["found"]
    outcome.checks.append(
        Check(f"found {len(found)} post(s), at least {test['min_posts']} wanted", len(found) >= test["min_posts"])
    )
    for key in test["metadata_keys"]:
        missing = [str(post["remote_id"]) for post in found if key not in (post.get("metadata") or {})]
        detail = f"missing in post(s) {', '.join(missing[:10])}" if missing else ""
        outcome.checks.append(Check(f"every post has metadata {key!r}", not missing and bool(found), detail))
    if not test["download"]:
        return
    hashes: set[str] = set()
    failures = []
    for post in found[: test["download"]]:
        url = _post_url(description.get("post_url"), post)
        job = {"id": 0, "kind": TaskKind.DOWNLOAD, "site": name, "url": url, "remote_id": str(post["remote_id"])}
        job["metadata"] = post.get("metadata")
        fetched = pool.submit(worker.download, job, folder).result(JOB_TIMEOUT)
        if fetched["status"] != ResultStatus.DONE:
            failures.append(f"{url}: {fetched.get('error_class')}: {fetched.get('error')}")
            continue
        hashes.update(record["sha256"] for record in fetched["files"])
    wanted = min(test["download"], len(found))
    outcome.checks.append(
        Check(
            f"downloaded {wanted - len(failures)} of {wanted} post(s)", not failures and wanted > 0, "; ".join(failures)
        )
    )
    for digest in test["sha256"]:
        outcome.checks.append(
            Check(
                f"a file with sha256 {digest[:12]}...",
                digest in hashes,
                "" if digest in hashes else "not among the files downloaded",
            )
        )


def _post_url(template: str | None, post: dict[str, Any]) -> str:
    """The URL a download of this post uses, as the coordinator would make it."""
    if template:
        try:
            return template.format_map({**(post.get("metadata") or {}), "remote_id": post["remote_id"]})
        except (KeyError, IndexError, ValueError, AttributeError):
            pass
    return post.get("url") or ""
