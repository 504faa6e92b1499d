"""HTTP API: one blueprint per resource. Views only parse, call the domain, serialize."""

from __future__ import annotations

import flask_smorest
from webargs.flaskparser import FlaskParser


class _Parser(FlaskParser):
    #: Bad input is a client error like any other: 400, not webargs' default 422.
    DEFAULT_VALIDATION_STATUS = 400


class ApiBlueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = _Parser()


def register_blueprints(api: flask_smorest.Api) -> None:
    from . import catalogue, health, inventory, known, leases, metrics, report, sites, stats, tasks

    for module in (leases, inventory, tasks, stats, metrics, sites, health, known, report):
        api.register_blueprint(module.blp)
    for blueprint in (catalogue.items, catalogue.files, catalogue.duplicates):
        api.register_blueprint(blueprint)


def register_pages(app) -> None:
    """Pages for people, outside the API's OpenAPI description."""
    from . import dashboard

    app.register_blueprint(dashboard.blp)
