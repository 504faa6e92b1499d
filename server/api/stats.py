"""``GET /stats``: the fleet at a glance, as JSON. Without a key, only the counts: key
names, client versions and error texts (which name site URLs) are for key holders."""

from flask import g

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..models import Role
from ..schemas import StatsSchema
from ..stats import collect_stats, public_part
from . import ApiBlueprint

blp = ApiBlueprint("stats", __name__, url_prefix="/stats", description="Monitoring")


@blp.route("", methods=["GET"])
@auth_required(Role.CLIENT, optional_setting="STATS_REQUIRE_KEY")
@blp.response(200, StatsSchema)
def stats():
    """Items and tasks by state and per site, leases, throughput; with a key also per client and recent errors"""
    stats = collect_stats(db.session, sites=context.sites())
    return stats if g.client is not None else public_part(stats)
