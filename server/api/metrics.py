"""``GET /metrics``: the Prometheus text exposition. Readable without a key unless
``STATS_REQUIRE_KEY``, like ``/stats``; the per-node gauge (it names the nodes) only with one."""

from flask import Response, g

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..metrics import exposition
from ..models import Role
from . import ApiBlueprint

blp = ApiBlueprint("metrics", __name__, url_prefix="/metrics", description="Monitoring")


@blp.route("", methods=["GET"])
@auth_required(Role.CLIENT, optional_setting="STATS_REQUIRE_KEY")
@blp.doc(responses={"200": {"description": "Prometheus text exposition format 0.0.4"}})
def metrics():
    """Counters, latency histograms and gauges of the queue, for Prometheus"""
    body, content_type = exposition(db.session, context.sites(), nodes=g.client is not None)
    return Response(body, mimetype=None, content_type=content_type)
