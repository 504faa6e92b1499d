"""``/dashboard``: the operator's page (server-rendered, refreshed by its own small script
from ``/dashboard/data``). The page holds no data; the data is readable without a key
unless ``STATS_REQUIRE_KEY``, and names nodes, errors and dead tasks only to key holders.
Actions (requeue) go through the admin API with the key the operator types in."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, render_template

from common.version import __version__

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..models import Role

blp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


@blp.route("", methods=["GET"])
def page():
    return render_template(
        "dashboard.html",
        version=__version__,
        refresh_seconds=current_app.config["DASHBOARD_REFRESH_SECONDS"],
        key_required=bool(current_app.config["STATS_REQUIRE_KEY"]),
    )


@blp.route("/data", methods=["GET"])
@auth_required(Role.CLIENT, optional_setting="STATS_REQUIRE_KEY")
def data():
    snapshot = context.dashboard().snapshot(db.session, context.sites(), full=g.client is not None)
    return jsonify(snapshot | {"refresh_seconds": current_app.config["DASHBOARD_REFRESH_SECONDS"]})
