"""``python -m client``: pull work from the coordinator and do it.

Exit status: 0 everything leased was done (or there was nothing to do); 1 some tasks
failed, were refused or could not be reported; 2 bad usage or settings; 3 the
coordinator cannot be reached or refuses this client; 4 this node cannot store files
(disk full, quota, read-only --dest); 128+N stopped by signal N.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from common.protocol import MAX_BATCH, MIN_BATCH
from common.settings import ConfigError, load_settings
from common.states import TaskKind
from common.version import __version__

from .cache import open_cache, redact
from .coordinator import Coordinator, CoordinatorError
from .kinds import DownloadWork, MetadataWork
from .probe import ffmpeg_missing
from .reporting import EXIT_NODE_FAULT
from .runner import DRAIN, LOOP, ONCE, Runner, Stopper
from .settings import DEFAULTS, validate, validate_node
from .storage import remove_abandoned_partials, storage_problem, wait_until_storable
from .uploads import Uploader

EXIT_UNREACHABLE = 3
log = logging.getLogger("fetchfleet")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear through progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(verbose: int, quiet: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("fetchfleet")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=__doc__.split("\n\n", 1)[1])
@click.option("--server", metavar="URL", help="Coordinator URL [SERVER_URL].")
@click.option("--key", metavar="KEY", help="This node's API key [API_KEY].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Settings file [FETCHFLEET_CONFIG].")
@click.option("-v", "--verbose", count=True, help="Log each failed task.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary line.")
@click.version_option(__version__, prog_name="fetchfleet client")
@click.pass_context
def main(ctx: click.Context, server, key, config_path, verbose, quiet):
    """Pull metadata or download tasks from a fetchfleet coordinator and do them."""
    _setup_logging(verbose, quiet)
    try:
        settings = load_settings(DEFAULTS, path=config_path)
        if server:
            settings["SERVER_URL"] = server
        if key:
            settings["API_KEY"] = key
        validate(settings)
    except ConfigError as error:
        _fail(str(error), 2)
    ctx.obj = {"settings": settings, "quiet": quiet}


def run_options(command):
    command = click.option("--jobs", "-j", type=click.IntRange(1, 64), help="Parallel worker processes [JOBS].")(
        command
    )
    command = click.option("--loop", "mode", flag_value=LOOP, help="Keep pulling work until stopped.")(command)
    command = click.option(
        "--drain", "mode", flag_value=DRAIN, help="Keep pulling until nothing is available right now."
    )(command)
    command = click.option("--lease-seconds", type=click.IntRange(1, None), help="Ask for leases this long.")(command)
    command = click.option(
        "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
    )(command)
    return command


@main.command()
@click.argument("n", type=click.IntRange(MIN_BATCH, MAX_BATCH))
@click.option("--site", help="Only tasks of this site.")
@run_options
@click.pass_obj
def metadata(obj, **options):
    """Lease N metadata tasks (at most 100 at once): find what exists for inventory items, download nothing."""
    sys.exit(_run(obj, kind=TaskKind.METADATA, **options))


@main.command()
@click.argument("site")
@click.argument("n", type=click.IntRange(MIN_BATCH, MAX_BATCH))
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), help="Download folder [DEST].")
@run_options
@click.pass_obj
def download(obj, **options):
    """Lease N download tasks (at most 100 at once) of SITE and download them into DEST/SITE/."""
    sys.exit(_run(obj, kind=TaskKind.DOWNLOAD, **options))


def _run(obj: dict[str, Any], *, kind, n, site, jobs, mode, lease_seconds, progress, dest=None) -> int:
    settings = obj["settings"]
    try:
        validate_node(settings)
    except ConfigError as error:
        _fail(str(error), 2)
    stopper = Stopper()
    stopper.install()
    uploader = None
    if kind == TaskKind.DOWNLOAD:
        dest = Path(dest or settings["DEST"])
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            _fail(f"cannot create --dest {dest}: {error.strerror}", 2)
        _wait_for_storage(dest, mode, stopper)
        remove_abandoned_partials(dest)
        uploader = _uploader(settings, dest)  # before any lease: a store that cannot work stops us here
    coordinator = Coordinator(settings["SERVER_URL"], settings["API_KEY"], timeout=settings["HTTP_TIMEOUT"])
    if kind == TaskKind.DOWNLOAD:
        _check_tools_for(coordinator, site, settings)
    work = MetadataWork(open_cache(settings)) if kind == TaskKind.METADATA else DownloadWork(dest, uploader)
    runner = Runner(
        coordinator,
        work=work,
        n=n,
        site=site,
        jobs=jobs or settings["JOBS"],
        mode=mode or ONCE,
        lease_seconds=lease_seconds,
        settings=settings,
        stopper=stopper,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    try:
        summary = runner.run()
    except CoordinatorError as error:
        _fail(error.message, EXIT_UNREACHABLE if error.status is None or error.fatal else 1)
    finally:
        coordinator.close()
    click.echo(summary.line())
    return summary.exit_code()


def _check_tools_for(coordinator: Coordinator, site: str, settings: dict[str, Any]) -> None:
    """A yt-dlp site's downloads need ffmpeg (merging streams, extracting audio): say so now,
    in one line, rather than fail every task. An unreachable coordinator is the runner's to report."""
    try:
        engine = (coordinator.sites().get(site) or {}).get("engine")
    except CoordinatorError:
        return
    if engine == "yt-dlp" and (missing := ffmpeg_missing(settings)):
        coordinator.close()
        _fail(missing, 2)


def _open_store(settings: dict[str, Any]):
    """The file store the settings name, checked (exit 2 with one line if it cannot be
    used: unreachable, no such bucket, credentials refused), or None."""
    from common.file_store import StoreError, open_store

    try:
        store = open_store(settings)
        if store is not None:
            store.check()
    except StoreError as error:
        _fail(str(error), 2)
    return store


def _uploader(settings: dict[str, Any], dest: Path) -> Uploader | None:
    store = _open_store(settings)
    if store is None:
        return None
    return Uploader(store, dest, keep_local=settings["KEEP_LOCAL_COPY"])


def _wait_for_storage(dest: Path, mode: str | None, stopper: Stopper) -> None:
    """A --dest that cannot take files: a --loop node waits for it, any other run exits 4."""
    problem = storage_problem(dest)
    if problem is None:
        return
    if mode != LOOP:
        _fail(f"this node cannot store files in {dest}: {problem}", EXIT_NODE_FAULT)
    if not wait_until_storable(dest, stopper.graceful, problem):  # stopped while waiting: the usual 128+N
        sys.exit(128 + signal.Signals[stopper.signal_name or "SIGTERM"].value)


@main.command("test-site")
@click.argument("site", required=False)
@click.option("--all", "every", is_flag=True, help="Test every site that has a test.")
@click.pass_obj
def test_site(obj, site, every):
    """Run SITE's health test (the coordinator's SITES[...]["test"]): resolve and download into
    a temporary folder (never --dest, the node's archive or the cache), one line per check,
    and report the outcome to the coordinator. Exit 0 when every check passes, 1 when one
    fails, 2 for an unknown site or one without a test."""
    from .site_test import run_site_test

    settings = obj["settings"]
    try:
        validate_node(settings)
    except ConfigError as error:
        _fail(str(error), 2)
    if bool(site) == every:
        _fail("name a SITE, or --all", 2)
    coordinator = Coordinator(settings["SERVER_URL"], settings["API_KEY"], timeout=settings["HTTP_TIMEOUT"])
    try:
        described = coordinator.site_list()
        if site is not None and site not in described:
            _fail(f"the coordinator has no site {site!r}; it has: {', '.join(described) or 'none'}", 2)
        if site is not None and not described[site].get("test"):
            _fail(f"site {site!r} has no test (SITES[{site!r}]['test'] on the coordinator)", 2)
        names = [site] if site else [name for name, info in described.items() if info.get("test")]
        if not names:
            _fail("no site has a test (SITES[...]['test'] on the coordinator)", 2)
        failed = 0
        for name in names:
            outcome = run_site_test(name, described[name], settings)
            for check in outcome.checks:
                click.echo(check.line(name))
            coordinator.report_test(name, outcome.passed, [check.as_wire() for check in outcome.checks])
            failed += not outcome.passed
    except CoordinatorError as error:
        _fail(error.message, EXIT_UNREACHABLE if error.status is None or error.fatal else 1)
    finally:
        coordinator.close()
    click.echo(f"{len(names) - failed} of {len(names)} site test(s) passed")
    sys.exit(1 if failed else 0)


@main.group()
def store():
    """The central file store (FILE_STORE): check it, move an existing archive into it."""


@store.command("check")
@click.pass_obj
def store_check(obj):
    """Can this node use the file store? One line: where it is, or what is wrong (exit 2)."""
    settings = obj["settings"]
    file_store = _open_store(settings)
    if file_store is None:
        _fail("no file store configured (FILE_STORE): files stay under --dest", 2)
    click.echo(f"ok: {file_store.config.where}")


@store.command("upload-existing")
@click.option("--dest", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Download folder [DEST].")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.pass_obj
def store_upload_existing(obj, dest, progress):
    """Upload what this node already holds under --dest (every file with its sidecar) into
    the file store, and tell the coordinator. Resumable: run it again and nothing is
    uploaded twice. KEEP_LOCAL_COPY = False removes each local copy once the coordinator
    knows where it lives now."""
    from common.file_store import StoreError

    from .upload_existing import upload_existing

    settings = obj["settings"]
    try:
        validate_node(settings)
    except ConfigError as error:
        _fail(str(error), 2)
    file_store = _open_store(settings)
    if file_store is None:
        _fail("no file store configured (FILE_STORE)", 2)
    dest = Path(dest or settings["DEST"])
    if not dest.is_dir():
        _fail(f"--dest {dest} is not a folder", 2)
    coordinator = Coordinator(settings["SERVER_URL"], settings["API_KEY"], timeout=settings["HTTP_TIMEOUT"])
    try:
        tally = upload_existing(
            file_store,
            coordinator,
            dest,
            keep_local=settings["KEEP_LOCAL_COPY"],
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    except CoordinatorError as error:
        _fail(error.message, EXIT_UNREACHABLE if error.status is None or error.fatal else 1)
    except StoreError as error:  # resumable: what went up is remembered
        _fail(f"{error} (run it again to go on)", EXIT_NODE_FAULT)
    finally:
        coordinator.close()
    click.echo(tally.line())
    sys.exit(tally.exit_code())


@main.group()
def cache():
    """The metadata cache: its state, and replication with a central CouchDB."""


@cache.command("status")
@click.pass_obj
def cache_status(obj):
    """Which cache this node uses, how many documents it holds, and its replications."""
    settings = obj["settings"]
    guarded = open_cache(settings)
    if not guarded.enabled:
        _fail(f"the metadata cache ({guarded.where}) is unavailable", EXIT_UNREACHABLE)
    for key, value in guarded.cache.describe().items():
        click.echo(f"{key}: {value}")
    guarded.close()
    if settings.get("COUCHDB_URL"):
        from .cache.couch import replication_status

        _show_replication(
            _couch_call(settings, replication_status, settings["COUCHDB_URL"], settings["COUCHDB_DATABASE"])
        )


@cache.command("replicate")
@click.argument("central_url")
@click.option("--stop", is_flag=True, help="Cancel this node's replication instead.")
@click.pass_obj
def cache_replicate(obj, central_url, stop):
    """Replicate this node's CouchDB cache with the one at CENTRAL_URL, continuously, both ways.

    Safe to run again: replication documents are only written when they change. They
    live in the local CouchDB's _replicator database and survive its restarts.
    """
    from .cache import couch

    settings = obj["settings"]
    local = settings.get("COUCHDB_URL")
    if not local:
        _fail("replication needs a local CouchDB: set COUCHDB_URL (FETCHFLEET_COUCHDB_URL)", 2)
    database = settings["COUCHDB_DATABASE"]
    if stop:
        count = _couch_call(settings, couch.stop_replication, local, database, central=central_url)
        click.echo(f"stopped {count} replication(s)")
        return
    _show_replication(
        _couch_call(settings, couch.ensure_replication, local, central_url, database, central=central_url)
    )


def _couch_call(settings, function, *args, central: str | None = None):
    """Run a CouchDB call; any failure is one line on stderr, without credentials."""
    try:
        return function(*args)
    except Exception as error:
        message = f"{error.__class__.__name__}: {error}"
        from .cache.base import _secrets_of

        for secret in _secrets_of(settings.get("COUCHDB_URL")) + _secrets_of(central):
            message = message.replace(secret, "***")
        _fail(f"CouchDB call failed: {redact(message)[:300]}", EXIT_UNREACHABLE)


def _show_replication(status: list[dict]) -> None:
    if not status:
        click.echo("replication: none")
    for entry in status:
        reason = f" ({entry['reason']})" if entry["reason"] else ""
        route = f"{entry['source']} -> {entry['target']}"
        click.echo(f"replication {entry['direction']}: {route}: {entry['state']}{reason}")
