"""Admin commands: ``flask --app server <command>``. Each wraps a plain domain function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from common.states import TaskKind, TaskState

from . import context
from .auth import create_key, list_keys, revoke_key
from .errors import FetchfleetError
from .extensions import db
from .schemas import MAX_ID


def init_app(app: Flask) -> None:
    for command in (
        init_db_command,
        import_csv_command,
        create_key_command,
        list_keys_command,
        revoke_key_command,
        tasks_group,
        stats_command,
        items_group,
        sites_group,
        files_group,
        duplicates_command,
        import_known_command,
        report_command,
        events_group,
        move_to_command,
    ):
        app.cli.add_command(command)


def init_db() -> None:
    """Create or upgrade the schema to the newest migration (safe to run again)."""
    from flask_migrate import upgrade

    from . import MIGRATIONS_DIR

    upgrade(directory=MIGRATIONS_DIR)


def _fail(error: FetchfleetError, code: int = 1) -> None:
    click.echo(f"error: {error.message}", err=True)
    sys.exit(code)


@click.command("init-db")
@with_appcontext
def init_db_command():
    """Create the tables, or upgrade them to the newest schema."""
    init_db()
    click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)}")


@click.command("import-csv")
@with_appcontext
@click.argument("file", type=click.File("rb"))
@click.option("--quiet", is_flag=True, help="Only the summary line; not every rejected row.")
def import_csv_command(file, quiet):
    """Import an inventory CSV FILE ('-' for stdin). Exit 1 if any row was rejected."""
    from .inventory import import_inventory

    on_error = None if quiet else (lambda error: click.echo(f"rejected {error}", err=True))
    try:
        report = import_inventory(
            db.session,
            file,
            sites=context.sites(),
            chunk_rows=current_app.config["IMPORT_CHUNK_ROWS"],
            on_error=on_error,
        )
    except FetchfleetError as error:
        _fail(error, 2)
    if report.aborted:
        click.echo(f"stopped: {report.aborted}", err=True)
    click.echo(report.summary())
    sys.exit(1 if report.rejected or report.aborted else 0)


@click.command("create-key")
@with_appcontext
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin key: may also import inventory and requeue tasks.")
def create_key_command(name, admin):
    """Create an API key for client NAME; the key is the last line printed."""
    from .models import Role

    try:
        key = create_key(db.session, name, Role.ADMIN if admin else Role.CLIENT)
    except FetchfleetError as error:
        _fail(error)
    click.echo(f"created {'admin' if admin else 'client'} key for {name!r} (shown once, stored hashed):", err=True)
    click.echo(key)


@click.command("list-keys")
@with_appcontext
def list_keys_command():
    """List keys: name, role, last seen, client version."""
    for key in list_keys(db.session):
        status = "revoked" if key.revoked_at else "active"
        seen = key.last_seen_at.isoformat(timespec="seconds") if key.last_seen_at else "never"
        click.echo(f"{key.name}\t{key.role}\t{status}\tlast seen {seen}\tversion {key.client_version or '-'}")


@click.command("revoke-key")
@with_appcontext
@click.argument("name")
def revoke_key_command(name):
    """Revoke the key of client NAME."""
    try:
        revoke_key(db.session, name)
    except FetchfleetError as error:
        _fail(error)
    click.echo(f"revoked key {name!r}")


@click.group("tasks", cls=AppGroup)
def tasks_group():
    """Reports on tasks, and requeueing dead or stuck ones."""


@tasks_group.command("list")
@click.option(
    "--state", type=click.Choice([s.value for s in TaskState]), default=TaskState.DEAD.value, show_default=True
)
@click.option("--kind", type=click.Choice([k.value for k in TaskKind]))
@click.option("--site")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def tasks_list_command(state, kind, site, limit, as_json):
    """List tasks in a state (dead by default): the failure report."""
    from .maintenance import list_tasks

    after_id, shown = 0, 0
    while shown < limit:
        page = list_tasks(
            db.session, state=state, kind=kind, site=site, limit=min(1000, limit - shown), after_id=after_id
        )
        for task in page:
            if as_json:
                click.echo(json.dumps(task, default=str))
            else:
                error = f"{task['error_class'] or '-'}: {task['last_error'] or '-'}"
                click.echo(
                    f"{task['id']}\t{task['kind']}\t{task['site']}\t{task['state']}\t"
                    f"attempts {task['attempts']}\t{error}\t{task['url']}"
                )
        shown += len(page)
        if len(page) < 1000:
            break
        after_id = page[-1]["id"]
    if not as_json:
        click.echo(f"{shown} task(s)", err=True)


@tasks_group.command("requeue")
@click.option(
    "--state",
    type=click.Choice(["dead", "not_found", "done", "queued", "duplicate"]),
    help="Requeue every task in this state.",
)
@click.option("--kind", type=click.Choice([k.value for k in TaskKind]), help="Only this kind (default: both).")
@click.option("--site", help="Only this site (its metadata tasks too, unless --kind download).")
@click.option("--id", "task_ids", type=int, multiple=True, help="A task id (repeatable).")
def tasks_requeue_command(state, kind, site, task_ids):
    """Give tasks a fresh start: attempts 0, available now."""
    from .maintenance import requeue_tasks

    try:
        by_kind = requeue_tasks(db.session, task_ids=list(task_ids) or None, state=state, kind=kind, site=site)
    except FetchfleetError as error:
        _fail(error, 2)
    kinds = ", ".join(f"{count} {name}" for name, count in by_kind.items())
    click.echo(f"requeued {sum(by_kind.values())} task(s) ({kinds})")


@tasks_group.command("reclaim")
def tasks_reclaim_command():
    """Put the tasks of every expired lease back in the queue now (stuck tasks)."""
    from .maintenance import reclaim_stuck

    click.echo(f"reclaimed {reclaim_stuck(db.session, policy=context.policy(), events=context.events())} task(s)")


@click.group("stats", cls=AppGroup, invoke_without_command=True)
@click.pass_context
@with_appcontext
def stats_command(ctx):
    """Print /stats as JSON (or: stats rebuild)."""
    if ctx.invoked_subcommand is not None:
        return
    from .stats import collect_stats

    click.echo(json.dumps(collect_stats(db.session, sites=context.sites()), default=str, indent=2))


@stats_command.command("rebuild")
@click.option("--check", is_flag=True, help="Only compare the kept counts with a recount; exit 1 if they differ.")
def stats_rebuild_command(check):
    """Count tasks, items and files again into the kept counts /stats reads (after an
    upgrade, or to repair them). Writers wait on PostgreSQL while it counts."""
    from .counts import differences, rebuild

    if check:
        found = differences(db.session)
        db.session.commit()
        for line in found:
            click.echo(line)
        click.echo("kept counts differ from a recount" if found else "kept counts equal a recount")
        sys.exit(1 if found else 0)
    from .database import utcnow

    rebuild(db.session, utcnow())
    click.echo("kept counts rebuilt")


# -------------------------------------------------------------------- catalogue


def _emit(rows, as_json: bool, columns: tuple[str, ...]) -> None:
    """Rows as tab-separated columns (empty for None), or one JSON object per line."""
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, default=str))
        else:
            click.echo("\t".join("" if row.get(name) is None else str(row[name]) for name in columns))


FILE_COLUMNS = (
    "id",
    "site",
    "remote_id",
    "item",
    "node",
    "path",
    "size",
    "sha256",
    "md5",
    "mime",
    "phash",
    "store_key",
)


@click.group("items", cls=AppGroup)
def items_group():
    """What the inventory found: items, their tasks, posts and files."""


@items_group.command("list")
@click.option("--state")
@click.option("--site")
@click.option("--text", help="Text in the key, title or query (case-insensitive).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def items_list_command(state, site, text, limit, as_json):
    """List items (key, state, title) in id order."""
    from .catalogue import list_items

    cursor, shown = None, 0
    while shown < limit:
        page = list_items(db.session, state=state, site=site, text=text, limit=min(1000, limit - shown), cursor=cursor)
        _emit(page.rows, as_json, ("id", "key", "state", "title"))
        shown += len(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break


@items_group.command("show")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="The item as one JSON object (as GET /items/KEY).")
def items_show_command(key, as_json):
    """An item: its metadata task per site, the posts it found, their files. Exit 1 if unknown."""
    from .catalogue import show_item

    try:
        item = show_item(db.session, key)
    except FetchfleetError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(item, default=str))
        return
    totals = item["totals"]
    click.echo(f"{item['key']}\t{item['state']}\t{item['title'] or ''}")
    click.echo(
        f"found {totals['found']} post(s), {totals['known']} known, {totals['files']} file(s), "
        f"{totals['bytes']} bytes; downloads {json.dumps(totals['downloads'])}"
    )
    for task in item["metadata_tasks"]:
        error = f"\t{task['error_class']}: {task['last_error']}" if task["last_error"] else ""
        click.echo(f"metadata\t{task['site']}\t{task['state']}\tattempts {task['attempts']}{error}")
    for download in item["downloads"]:
        click.echo(f"download\t{download['id']}\t{download['site']}\t{download['remote_id']}\t{download['state']}")
        for file in download["files"]:
            click.echo(f"file\t{file['id']}\t{file['node']}\t{file['path']}\t{file['size']}\t{file['sha256']}")
    if item["next_downloads_cursor"]:
        click.echo("(more downloads: --json, or GET /items/KEY?downloads_cursor=...)", err=True)
    if item["check_every"] or item["next_check_at"] or item["paused_at"]:
        every = f"every {item['check_every']} s" if item["check_every"] else "at its site's interval"
        paused = f", paused since {item['paused_at']}" if item["paused_at"] else ""
        click.echo(f"subscription {every}, next check {item['next_check_at'] or '-'}{paused}")
    for check in item["checks"]:
        how = "stopped at known" if check["stopped_at_known"] else ("full" if check["full"] else "to the end")
        error = f"\t{check['error']}" if check["error"] else ""
        click.echo(
            f"check\t{check['checked_at']}\t{check['site']}\t{check['node']}\t{check['outcome']}\t"
            f"seen {check['posts_seen']}, new {check['new_posts']}, known {check['known_posts']}\t{how}{error}"
        )


@items_group.command("pause")
@click.argument("key")
def items_pause_command(key):
    """Pause an item: its waiting tasks are not leased until it is resumed. Exit 1 if unknown."""
    from .pausing import pause_item

    try:
        click.echo(f"paused {key}: {pause_item(db.session, key)} task(s) wait")
    except FetchfleetError as error:
        _fail(error)


@items_group.command("resume")
@click.argument("key")
def items_resume_command(key):
    """Resume a paused item. Exit 1 if unknown."""
    from .pausing import resume_item

    try:
        click.echo(f"resumed {key}: {resume_item(db.session, key)} task(s) back in the queue or schedule")
    except FetchfleetError as error:
        _fail(error)


@click.group("sites", cls=AppGroup)
def sites_group():
    """Pause and resume a whole site."""


@sites_group.command("pause")
@click.argument("name")
def sites_pause_command(name):
    """Pause a site: none of its tasks is leased until it is resumed. Exit 1 if unknown."""
    from .pausing import set_site_paused

    try:
        set_site_paused(db.session, name, True, sites=context.sites())
    except FetchfleetError as error:
        _fail(error)
    click.echo(f"paused site {name}")


@sites_group.command("resume")
@click.argument("name")
def sites_resume_command(name):
    """Resume a paused site. Exit 1 if unknown."""
    from .pausing import set_site_paused

    try:
        set_site_paused(db.session, name, False, sites=context.sites())
    except FetchfleetError as error:
        _fail(error)
    click.echo(f"resumed site {name}")


@click.group("files", cls=AppGroup)
def files_group():
    """Files the archive holds: find them by hash, site, node or item; similar images."""


@files_group.command("find")
@click.option("--sha256")
@click.option("--md5")
@click.option("--site")
@click.option("--node", help="The name of the node (its key) that keeps them.")
@click.option("--item", help="An item key.")
@click.option("--mime", help="A MIME type, or a prefix ending in / (image/).")
@click.option("--since", type=click.DateTime(), help="Recorded at or after (UTC).")
@click.option("--until", type=click.DateTime(), help="Recorded before (UTC).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def files_find_command(sha256, md5, site, node, item, mime, since, until, limit, as_json):
    """File records, tab-separated: id, site, remote id, item, node, path, size, sha256, md5, mime, phash,
    store key (empty: only on its node)."""
    from datetime import UTC

    from .catalogue import list_files
    from .schemas import FileQuerySchema

    problems = FileQuerySchema().validate({k: v for k, v in {"sha256": sha256, "md5": md5}.items() if v})
    if problems:
        name, [problem, *_] = next(iter(problems.items()))
        _fail(FetchfleetError(f"--{name}: {problem}"))
    since, until = (moment.replace(tzinfo=UTC) if moment else None for moment in (since, until))
    cursor, shown = None, 0
    while shown < limit:
        page = list_files(
            db.session,
            sha256=sha256,
            md5=md5,
            site=site,
            node=node,
            item=item,
            mime=mime,
            since=since,
            until=until,
            limit=min(1000, limit - shown),
            cursor=cursor,
        )
        _emit(page.rows, as_json, FILE_COLUMNS)
        shown += len(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    if not as_json:
        click.echo(f"{shown} file(s)", err=True)


@files_group.command("similar")
@click.option("--phash", help="16 hex digits.")
@click.option("--dhash", help="16 hex digits.")
@click.option("--file", "file_id", type=click.IntRange(1), help="Search with this file's hash.")
@click.option("--hash", "column", type=click.Choice(["phash", "dhash"]), help="With --file: which hash.")
@click.option("--distance", type=click.IntRange(0, 16), default=8, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def files_similar_command(phash, dhash, file_id, column, distance, limit, as_json):
    """Reverse image search: files within --distance bits, nearest first (distance first column)."""
    from .catalogue import hash_of_file, similar_files
    from .similar import HashIndex

    given = [name for name, value in (("phash", phash), ("dhash", dhash), ("file", file_id)) if value]
    if len(given) != 1:
        _fail(FetchfleetError("give exactly one of --phash, --dhash or --file"))
    try:
        if file_id:
            column = column or "phash"
            value = hash_of_file(db.session, file_id, column)
        else:
            column, text = ("phash", phash) if phash else ("dhash", dhash)
            if len(text) != 16 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise FetchfleetError(f"--{column}: must be 16 hexadecimal digits")
            value = int(text, 16)
        found = similar_files(
            db.session,
            HashIndex(column, refresh_seconds=0),
            value=value,
            distance=distance,
            limit=limit,
            exclude=file_id,
        )
    except FetchfleetError as error:
        _fail(error)
    _emit(found, as_json, ("distance", *FILE_COLUMNS))


@files_group.command("show")
@click.argument("file_id", type=int)
def files_show_command(file_id):
    """One file record as JSON. Exit 1 if unknown."""
    from .catalogue import get_file

    try:
        click.echo(json.dumps(get_file(db.session, file_id), default=str, indent=2))
    except FetchfleetError as error:
        _fail(error)


@files_group.command("fetch")
@click.argument("file_ids", metavar="ID...", type=click.IntRange(1, MAX_ID), nargs=-1, required=True)
@click.option(
    "--to", "folder", type=click.Path(file_okay=False, path_type=Path), required=True, help="Write them here."
)
def files_fetch_command(file_ids, folder):
    """Copy files out of the file store into a folder (named as on their node, sha256 checked
    on the way). Prints each path written; exit 1 if one is unknown or not in the store."""
    from common.file_store import StoreError, safe_filename

    from .file_store import locate, store

    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for file_id in file_ids:
        try:
            content = locate(db.session, file_id)
            target = folder / safe_filename(content.filename)
            if target.exists():  # two files of one name in one fetch, or fetched before
                target = folder / f"{file_id}-{safe_filename(content.filename)}"
            store().fetch_to(content.key, content.file["sha256"], target)
        except (FetchfleetError, StoreError) as error:
            click.echo(f"error: file {file_id}: {getattr(error, 'message', error)}", err=True)
            failed += 1
            continue
        click.echo(str(target))
    sys.exit(1 if failed else 0)


@click.command("duplicates")
@with_appcontext
@click.option("--kind", type=click.Choice(["exact", "similar"]), default="exact", show_default=True)
@click.option("--distance", type=click.IntRange(0, 16), default=8, show_default=True, help="similar: bits apart.")
@click.option("--hash", "column", type=click.Choice(["phash", "dhash"]), default="phash", show_default=True)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group and line.")
def duplicates_command(kind, distance, column, limit, as_json):
    """Content held more than once: exact (by sha256, most wasted bytes first) or similar images."""
    from .catalogue import exact_duplicates, similar_clusters
    from .similar import HashIndex

    if kind == "exact":
        page = exact_duplicates(db.session, limit=limit)
    else:
        page = similar_clusters(db.session, HashIndex(column, refresh_seconds=0), distance=distance, limit=limit)
    for group in page.rows:
        if as_json:
            click.echo(json.dumps(group, default=str))
            continue
        head = (
            f"{group['sha256']}\t{group['copies']} copies\t{group['wasted']} bytes wasted"
            if kind == "exact"
            else (f"cluster of {len(group['files'])} (from file {group['first']})")
        )
        click.echo(head)
        for file in group["files"]:
            distance_column = f"{file['distance']}\t" if "distance" in file else ""
            click.echo(
                f"  {distance_column}{file['id']}\t{file['site']}\t{file['remote_id']}\t{file['node']}\t{file['path']}"
            )


@click.command("import-known")
@with_appcontext
@click.argument("file", type=click.File("rb"))
@click.option("--site", help="The site of a gallery-dl archive, or of CSV rows without a site column.")
def import_known_command(file, site):
    """Import anchors (files the archive already has) from a CSV of site,remote_id / url /
    sha256 / md5 columns, or a gallery-dl --download-archive file. All or nothing: exit 1
    listing each bad line."""
    from .known import import_known

    try:
        report = import_known(db.session, file, sites=context.sites(), source=getattr(file, "name", "-"), site=site)
    except FetchfleetError as error:
        _fail(error)
    click.echo(report.summary())


@click.command("report")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (as GET /report).")
def report_command(as_json):
    """What needs a look (for cron mail): failing checks, overdue subscriptions, items that
    found nothing, failing downloads, dead tasks, held-back sites, silent nodes, posts gone
    upstream. Exit 1 when there is something to look at, 0 when all is well."""
    from .report import build_report

    report = build_report(db.session, sites=context.sites(), policy=context.policy())
    click.echo(json.dumps(report.as_dict(), indent=1) if as_json else report.as_text(), nl=as_json)
    sys.exit(1 if report.needs_attention else 0)


events_group = AppGroup("events", help="Deliver the event outbox to RabbitMQ and webhooks, and see its backlog.")


@events_group.command("run")
@click.option("--drain", is_flag=True, help="Stop once every destination has nothing left to deliver (or gave up).")
@click.option(
    "--give-up-after",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="With --drain: stop trying a destination after this many failures in a row (exit status 1).",
)
def events_run_command(drain, give_up_after):
    """Deliver events until stopped (SIGTERM or Ctrl-C), like a worker: one thread per
    destination, each with its own backoff; delivered events are pruned after
    EVENTS_KEEP_DAYS."""
    import logging
    import signal
    from datetime import timedelta

    from .event_sender import Sender, destinations_from_config

    destinations = destinations_from_config(current_app.config)
    if not destinations:
        click.echo("error: no event destination: set EVENTS_AMQP_URL and/or EVENTS_WEBHOOKS", err=True)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)  # it logs every connection step at INFO
    sender = Sender(db.engine, destinations, keep=timedelta(days=current_app.config["EVENTS_KEEP_DAYS"]))
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: sender.stop.set())
    click.echo(f"delivering events to {', '.join(d.name for d in destinations)}", err=True)
    sender.run(drain=drain, give_up_after=give_up_after)
    if sender.gave_up:
        click.echo(f"error: gave up on {', '.join(sorted(sender.gave_up))}: see `events status`", err=True)
        sys.exit(1)


@events_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def events_status_command(as_json):
    """The backlog of each configured destination: how many events wait, since when, and
    its last error."""
    from .database import utcnow
    from .event_sender import backlog, destinations_from_config

    now = utcnow()
    report = backlog(db.session, destinations_from_config(current_app.config), now)
    if as_json:
        click.echo(json.dumps([vars(entry) for entry in report], default=str, indent=2))
        return
    if not report:
        click.echo("no event destination configured (EVENTS_AMQP_URL, EVENTS_WEBHOOKS)")
        return
    for entry in report:
        age = f", oldest {int((now - entry.oldest_pending).total_seconds())} s old" if entry.oldest_pending else ""
        line = f"{entry.name}: {entry.pending} pending{age}"
        if entry.failures:
            line += f"; failing ({entry.failures} in a row): {entry.last_error}"
        elif entry.last_delivered_at:
            line += f"; last delivery {entry.last_delivered_at.isoformat(timespec='seconds')}"
        click.echo(line)


# ----------------------------------------------------------------------- moving


@click.command("move-to")
@click.argument("target_url")
@click.option("--replace", is_flag=True, help="Empty a target that already holds data first.")
@click.option("--chunk-rows", default=10_000, show_default=True, type=click.IntRange(100, 1_000_000))
@with_appcontext
def move_to_command(target_url, replace, chunk_rows):
    """Copy the whole archive (every table, ids kept) into the database at TARGET_URL,
    e.g. postgresql+psycopg://user@host/fetchfleet; run again to resume an interrupted
    move. Stop the coordinators first. Ends with row counts and a checksum per table of
    both databases; exit 1 if any differs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError
    from tqdm import tqdm

    from .move import check_source_is_current, migrate_target, move

    try:
        make_url(target_url)
    except ArgumentError:
        _fail(FetchfleetError(f"not a database URL: {target_url!r}"), 2)
    bars: dict[str, tqdm] = {}

    def progress(table: str, done: int, total: int) -> None:
        bar = bars.get(table)
        if bar is None:
            bar = bars[table] = tqdm(total=total, desc=f"{table:>20}", unit=" rows", leave=True, mininterval=1)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:
        check_source_is_current(db.engine)
        migrate_target(target_url)
        checks = move(db.engine, target_url, replace=replace, chunk_rows=chunk_rows, progress=progress)
    except FetchfleetError as error:
        _fail(error, 2)
    except OperationalError as error:
        _fail(FetchfleetError(f"cannot reach the target: {str(error.orig).strip().splitlines()[0]}"), 2)
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(
        f"{'table':<20} {'source rows':>12} {'target rows':>12}  {'source checksum':<16}  {'target checksum':<16}"
    )
    for check in checks:
        mark = "ok" if check.equal else "DIFFERS"
        click.echo(
            f"{check.name:<20} {check.source_rows:>12} {check.target_rows:>12}  "
            f"{check.source_checksum:<16}  {check.target_checksum:<16}  {mark}"
        )
    differing = [check.name for check in checks if not check.equal]
    if differing:
        click.echo(f"the target differs in {', '.join(differing)}", err=True)
        sys.exit(1)
    click.echo(f"moved {sum(check.target_rows for check in checks)} rows; point DATABASE_URL at the target")
