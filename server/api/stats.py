"""``GET /stats``: the fleet at a glance, as JSON."""

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..models import Role
from ..schemas import StatsSchema
from ..stats import collect_stats
from . import ApiBlueprint

blp = ApiBlueprint("stats", __name__, url_prefix="/stats", description="Monitoring")


@blp.route("", methods=["GET"])
@auth_required(Role.CLIENT, optional_setting="STATS_REQUIRE_KEY")
@blp.response(200, StatsSchema)
def stats():
    """Items and tasks by state, per site and per client; leases; throughput; recent errors"""
    return collect_stats(db.session, sites=context.sites())
