"""The whole loop, offline, in one command: ``python -m demo`` (``make demo``).

Starts the demo site and a coordinator (gunicorn, SQLite), imports an example inventory,
runs the metadata client and the download clients with progress bars, prints /stats,
and stops everything it started. Results stay in ``demo-output/`` to look at.

``--store``: files go into a local SeaweedFS (S3) instead of staying on the node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import requests

from support.processes import REPO_ROOT, demo_sites, start_coordinator, start_demo_site

DEMO_BUCKET = "fetchfleet-demo"
#: Short backoffs so the demo shows a failed task coming back and succeeding.
DEMO_SETTINGS = {
    "RETRY_BACKOFF_SECONDS": 2,
    "RETRY_BACKOFF_MAX_SECONDS": 10,
    "DOWNLOAD_MAX_ATTEMPTS": 3,
    "EMPTY_QUEUE_RETRY_AFTER_SECONDS": 2,
}


def step(message: str) -> None:
    click.secho(f"\n==> {message}", bold=True, err=True)


def run(args: list[str], env: dict[str, str], check: bool = True, echo: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if not echo else None,
    )
    if completed.stdout and echo:
        click.echo(completed.stdout.rstrip())
    if check and completed.returncode not in (0, 1):
        raise click.ClickException(f"{' '.join(args[:3])} exited with {completed.returncode}")
    return completed


def _show_the_store(seaweedfs, workdir: Path, env: dict[str, str]) -> None:
    step("what is in the file store (content-addressed: one object per distinct file, a sidecar per post)")
    objects = seaweedfs.objects(DEMO_BUCKET)
    sidecars = [key for key in objects if key.endswith(".json")]
    size = sum(size for key, size in objects.items() if not key.endswith(".json"))
    click.echo(
        f"{len(objects) - len(sidecars)} objects ({size / 1e6:.1f} MB) and {len(sidecars)} sidecars in the bucket"
    )
    click.echo(f"e.g. {sorted(sidecars)[0] if sidecars else '-'}")
    click.echo("flask --app server files fetch 1 --to fetched/ (read back from the store, sha256 checked):")
    run(["-m", "flask", "--app", "server", "files", "fetch", "1", "--to", str(workdir / "fetched")], env)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # run the cleanup in main's finally, as for Ctrl-C


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT / "demo-output",
    show_default=True,
    help="Where the database, downloads and logs go (emptied first).",
)
@click.option("--jobs", type=click.IntRange(1, 16), default=4, show_default=True, help="Download worker processes.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--store",
    is_flag=True,
    help="Upload every file into a local SeaweedFS (the central file store) and keep no local copies.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="In a terminal, keep the servers up at the end (to look at the dashboard) until Enter is pressed.",
)
def main(workdir: Path, jobs: int, progress: bool, store: bool, wait: bool) -> None:
    """Run the whole fetchfleet loop against the bundled demo site."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "logs").mkdir(parents=True)
    dest = workdir / "downloads"
    servers = []
    try:
        step("starting the demo site")
        site = start_demo_site(workdir / "logs")
        servers.append(site)
        click.echo(f"demo site: {site.url}", err=True)

        store_env: dict[str, str] = {}
        if store:
            step("starting the file store (SeaweedFS, S3 API on loopback)")
            from support.seaweedfs import SeaweedFS

            seaweedfs = SeaweedFS(workdir / "logs").start()
            servers.append(seaweedfs)
            seaweedfs.create_bucket(DEMO_BUCKET)
            store_env = seaweedfs.env(DEMO_BUCKET, "demo")
            click.echo(f"file store: s3://{DEMO_BUCKET}/demo at {seaweedfs.s3_url}", err=True)

        config = workdir / "config.py"
        sites = demo_sites(site.url)
        database = f"sqlite:///{workdir / 'fetchfleet.sqlite3'}"
        settings = {
            **DEMO_SETTINGS,
            "DATABASE_URL": database,
            "SITES": sites,
            "DEST": str(dest),
            "GALLERY_DL_CONFIG": "",
        }
        if store:  # credentials stay in the environment, never in a settings file
            settings["FILE_STORE"] = store_env.pop("FETCHFLEET_FILE_STORE")
            settings["FILE_STORE_ENDPOINT"] = store_env.pop("FETCHFLEET_FILE_STORE_ENDPOINT")
            settings["KEEP_LOCAL_COPY"] = False
        config.write_text("".join(f"{name} = {value!r}\n" for name, value in settings.items()))
        env = {**os.environ, "FETCHFLEET_CONFIG": str(config)}
        env = {
            name: value
            for name, value in env.items()
            if not name.startswith("FETCHFLEET_") or name == "FETCHFLEET_CONFIG"
        }
        env.update(store_env)

        step("creating the database and keys")
        run(["init_db.py"], env, echo=False)
        node = run(["-m", "flask", "--app", "server", "create-key", "demo-node"], env, echo=False).stdout.split()[-1]
        click.echo("database ready; created the key of client node 'demo-node'", err=True)

        step("importing the example inventory (demo/inventory.csv)")
        inventory = workdir / "inventory.csv"
        inventory.write_text((REPO_ROOT / "demo" / "inventory.csv").read_text().replace("{root}", site.url))
        run(["-m", "flask", "--app", "server", "import-csv", str(inventory)], env)

        step("starting the coordinator (gunicorn, 2 workers, SQLite)")
        store_settings = {k: settings[k] for k in ("FILE_STORE", "FILE_STORE_ENDPOINT") if k in settings}
        coordinator = start_coordinator(
            database, sites, workdir / "logs", workers=2, env=store_env, **DEMO_SETTINGS, **store_settings
        )
        servers.append(coordinator)
        click.echo(f"coordinator: {coordinator.url}", err=True)
        client = ["-m", "client", "--server", coordinator.url, "--key", node]
        key_header = {"Authorization": f"Bearer {node}"}  # without a key /stats shows counts only
        bar = ["--progress" if progress else "--no-progress"]

        step("metadata: resolving every inventory item on its sites (nothing downloaded)")
        run([*client, "metadata", "100", "--drain", "--jobs", "2", *bar], env)

        for round_number in range(1, 5):
            step(f"downloads, round {round_number}: python -m client download SITE 50 --drain --jobs {jobs}")
            for site_name in sites:
                run([*client, "download", site_name, "50", "--drain", "--jobs", str(jobs), *bar], env)
            stats = requests.get(coordinator.url + "/stats", headers=key_header, timeout=10).json()
            waiting = stats["tasks"]["download"]["queued"]
            if not waiting:
                break
            click.echo(f"{waiting} download(s) back in the queue with backoff; waiting for them", err=True)
            time.sleep(3)

        step("GET /stats")
        stats = requests.get(coordinator.url + "/stats", headers=key_header, timeout=10).json()
        click.echo(json.dumps({key: stats[key] for key in ("items", "tasks", "leases", "throughput")}, indent=1))
        for error in stats["recent_errors"]:
            click.echo(f"recent error x{error['count']}: {error['error_class']}: {error['error']}")

        step("what is on disk")
        files = [
            path
            for path in dest.rglob("*")
            if path.is_file() and path.suffix != ".json" and ".fetchfleet" not in path.parts
        ]
        sidecars = [path for path in dest.rglob("*.json")]
        size = sum(path.stat().st_size for path in files)
        click.echo(f"{len(files)} files ({size / 1e6:.1f} MB) and {len(sidecars)} sidecars under {dest}")
        if store:
            _show_the_store(seaweedfs, workdir, env)
        click.echo("dead tasks (flask --app server tasks list):")
        run(["-m", "flask", "--app", "server", "tasks", "list"], env)

        step("ask the archive: GET /duplicates?kind=similar&distance=10 (reverse image search)")
        answer = requests.get(
            coordinator.url + "/duplicates",
            params={"kind": "similar", "distance": 10, "limit": 100},
            headers=key_header,
            timeout=60,
        ).json()
        clusters = answer["groups"]
        click.echo(f"{len(clusters)} cluster(s) of near-duplicate images; the first:")
        for file in clusters[0]["files"] if clusters else ():
            click.echo(f"  near-duplicate: post {file['remote_id']}, {file['path']}, distance {file['distance']}")
        if clusters:
            first = clusters[0]["files"][0]
            click.echo(
                f"try: curl -H 'Authorization: Bearer <key>' '{coordinator.url}/files/similar?file={first['id']}"
                "&distance=10'",
                err=True,
            )

        step("watch it: the dashboard, Prometheus metrics")
        click.echo(f"dashboard: {coordinator.url}/dashboard  (enter the key {node} to see nodes and dead tasks)")
        click.echo(f"metrics:   {coordinator.url}/metrics")
        if wait and sys.stdin.isatty():
            sys.stdout.flush()
            click.echo("the servers stay up: press Enter to stop them", err=True)
            sys.stdin.readline()
    finally:
        # Stop first, report after: printing can fail (a closed pipe) and must not leave servers behind.
        for server in reversed(servers):
            server.stop()
    step("stopped everything the demo started")
    click.secho(f"done: look around in {workdir}", bold=True, err=True)


if __name__ == "__main__":
    main()
