"""``GET /sites``: the sites this coordinator hands out work for."""

from .. import context
from ..auth import auth_required
from ..models import Role
from ..schemas import SiteSchema
from . import ApiBlueprint

blp = ApiBlueprint("sites", __name__, url_prefix="/sites", description="Configured sites")


@blp.route("", methods=["GET"])
@auth_required(Role.CLIENT)
@blp.response(200, SiteSchema(many=True))
def list_sites():
    """Names, engines and templates of the configured sites"""
    return list(context.sites())
