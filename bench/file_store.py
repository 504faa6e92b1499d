"""The demo pipeline with the central file store on and off: 1,000 demo posts (50 ms
added to every request), ``python -m client download --jobs 8`` from a real coordinator
(gunicorn, SQLite), into ``--dest`` only, or also into a real SeaweedFS (each file
uploaded with its SHA-256, and its sidecar). Off and on are interleaved, each on a fresh
``--dest`` and a fresh prefix of the bucket, so every "on" run uploads everything.

Then dedup: a second node fetches the same 1,000 posts again into the prefix the last
run filled; what the store received for the bucket (its own Prometheus counter) is the
figure, and it should not move.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from support.processes import demo_sites, start_coordinator, start_demo_site
from support.seaweedfs import SeaweedFS

from . import fill
from .pipeline import _client, _warm

BUCKET = "fetchfleet-bench"


def run(plan, workdir: Path, progress) -> dict:
    from demo.catalog import Catalog

    site = start_demo_site(workdir, posts=plan.files, latency=plan.latency, image_size=plan.image_size)
    store = SeaweedFS(workdir / "seaweedfs")
    (workdir / "seaweedfs").mkdir()
    servers = [site]
    try:
        _warm(site.url, Catalog(plan.files, plan.image_size), plan.files)
        store.start()
        servers.append(store)
        store.create_bucket(BUCKET)
        url = f"sqlite:///{workdir / 'file_store.sqlite3'}"
        key = fill.prepare(url)
        second_key = fill.prepare(url)  # another node's key
        posts = [(str(number), f"{site.url}/post/show/{number}") for number in range(1, plan.files + 1)]
        fill.add_download_tasks(url, "demo", posts)
        coordinator = start_coordinator(url, demo_sites(site.url), workdir, workers=2)
        servers.append(coordinator)
        base = {
            **{name: value for name, value in os.environ.items() if not name.startswith("FETCHFLEET_")},
            "FETCHFLEET_CONFIG": str(workdir / "coordinator_config.py"),
            "FETCHFLEET_GALLERY_DL_CONFIG": '""',
        }
        jobs = 8
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        prefix = None
        for number in range(1, plan.store_pairs + 1):
            for mode in ("off", "on"):
                env = dict(base)
                if mode == "on":
                    prefix = f"run-{number}"
                    env.update(store.env(BUCKET, prefix))
                received = store.received_bytes(BUCKET)
                result = _client(coordinator, key, jobs, workdir, env, f"dest-{mode}-{number}", False)
                result["store_received_bytes"] = store.received_bytes(BUCKET) - received
                runs[mode].append(result)
                progress(f"store {mode}, --jobs {jobs}: {result['files_per_second']} files/s ({result['summary']})")
                fill.requeue_downloads(url)
        objects = [key for key in store.objects(BUCKET) if key.startswith(f"{prefix}/")]
        received = store.received_bytes(BUCKET)
        env = {**base, **store.env(BUCKET, prefix)}
        dedup = _client(coordinator, second_key, jobs, workdir, env, "dest-second-node", False)
        dedup["store_received_bytes"] = store.received_bytes(BUCKET) - received
        dedup["objects_after"] = len([key for key in store.objects(BUCKET) if key.startswith(f"{prefix}/")])
        dedup["objects_before"] = len(objects)
        progress(f"a second node, same files: the store received {dedup['store_received_bytes']:.0f} bytes")
        off = statistics.median(r["files_per_second"] for r in runs["off"])
        on = statistics.median(r["files_per_second"] for r in runs["on"])
        return {
            "files": plan.files,
            "jobs": jobs,
            "latency_seconds": plan.latency,
            "runs": runs,
            "store_off_files_per_second": off,
            "store_on_files_per_second": on,
            "on_vs_off": round(on / off, 3),
            "second_node": dedup,
        }
    finally:
        for server in reversed(servers):
            server.stop()
