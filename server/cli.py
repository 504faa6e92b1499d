"""Admin commands: ``flask --app server <command>``. Each wraps a plain domain function."""

from __future__ import annotations

import json
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from common.states import TaskKind, TaskState

from . import context
from .auth import create_key, list_keys, revoke_key
from .errors import FetchfleetError
from .extensions import db


def init_app(app: Flask) -> None:
    for command in (
        init_db_command,
        import_csv_command,
        create_key_command,
        list_keys_command,
        revoke_key_command,
        tasks_group,
        stats_command,
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
    "--state", type=click.Choice(["dead", "not_found", "done", "queued"]), help="Requeue every task in this state."
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

    click.echo(f"reclaimed {reclaim_stuck(db.session, policy=context.policy())} task(s)")


@click.command("stats")
@with_appcontext
def stats_command():
    """Print /stats as JSON."""
    from .stats import collect_stats

    click.echo(json.dumps(collect_stats(db.session, sites=context.sites()), default=str, indent=2))
