"""``GET /sites``: the sites this coordinator hands out work for; pause and resume one."""

from flask import g

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..models import Role
from ..pausing import set_site_paused
from ..schemas import PausedSchema, SiteSchema, SiteTestRecordedSchema, SiteTestResultSchema
from ..site_state import record_test
from ..validation import validated_json
from . import ApiBlueprint

blp = ApiBlueprint("sites", __name__, url_prefix="/sites", description="Configured sites")


@blp.route("", methods=["GET"])
@auth_required(Role.CLIENT)
@blp.response(200, SiteSchema(many=True))
def list_sites():
    """Names, engines and templates of the configured sites"""
    return list(context.sites())


@blp.route("/<name>/pause", methods=["POST"])
@auth_required(Role.ADMIN)
@blp.response(200, PausedSchema)
def pause(name):
    """Pause a site: none of its tasks is leased until it is resumed (leased ones finish)"""
    set_site_paused(db.session, name, True, sites=context.sites())
    return {"name": name, "paused": True}


@blp.route("/<name>/resume", methods=["POST"])
@auth_required(Role.ADMIN)
@blp.response(200, PausedSchema)
def resume(name):
    """Resume a paused site"""
    set_site_paused(db.session, name, False, sites=context.sites())
    return {"name": name, "paused": False}


@blp.route("/<name>/test-results", methods=["POST"])
@auth_required(Role.CLIENT)
@validated_json(SiteTestResultSchema)
@blp.response(200, SiteTestRecordedSchema)
def test_results(request, name):
    """A node reports its health test of a site (python -m client test-site)"""
    at = record_test(
        db.session,
        name,
        client_id=g.client.id,
        passed=request["passed"],
        checks=request["checks"],
        sites=context.sites(),
    )
    return {"name": name, "passed": request["passed"], "at": at}
