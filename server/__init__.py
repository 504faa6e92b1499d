"""The fetchfleet coordinator: ``create_app`` builds the Flask app (``flask --app server ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask_smorest import Api

from common.settings import REPO_ROOT, load_settings
from common.version import __version__

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    from . import cli, metrics, settings
    from .api import register_blueprints, register_pages
    from .dashboard import Dashboard
    from .database import engine_options, install_postgresql_behaviour, install_sqlite_behaviour
    from .errors import register_error_handlers
    from .events import Outbox
    from .extensions import db, migrate
    from .policy import LeasePolicy
    from .sites import SiteRegistry

    app = Flask(__name__)
    config = load_settings(settings.DEFAULTS)
    config.update(test_config or {})
    settings.validate(config)
    url = _absolute_sqlite_url(config["DATABASE_URL"])
    app.config.update(config)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(url),
        API_TITLE="fetchfleet coordinator",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Leases metadata and download tasks to fetchfleet client nodes."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        },
        JSON_SORT_KEYS=False,
    )
    app.extensions["fetchfleet"] = {
        "sites": SiteRegistry.from_config(config["SITES"]),
        "policy": LeasePolicy.from_config(config),
        "events": Outbox.from_config(config),
        "dashboard": Dashboard(refresh_seconds=config["DASHBOARD_REFRESH_SECONDS"]),
        "hash_indexes": {},
    }

    db.init_app(app)
    with app.app_context():
        install_sqlite_behaviour(db.engine)
        install_postgresql_behaviour(db.engine)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    api = Api(app)
    register_blueprints(api)
    register_pages(app)
    register_error_handlers(app)  # after Api: one error shape, with a message, for everything
    metrics.init_app(app)
    cli.init_app(app)
    return app


def _absolute_sqlite_url(url: str) -> str:
    """Relative SQLite paths are relative to the repository, and their folder is created."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite://" or ":memory:" in url:
        return url
    path = Path(url[len(prefix) :])
    if not path.is_absolute():
        path = REPO_ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return prefix + str(path)
