"""``GET /report``: what needs an operator's look (the same as ``flask --app server report``)."""

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..models import Role
from ..report import build_report
from ..schemas import ReportSchema
from . import ApiBlueprint

blp = ApiBlueprint("report", __name__, url_prefix="/report", description="What needs a look")


@blp.route("", methods=["GET"])
@auth_required(Role.ADMIN)
@blp.response(200, ReportSchema)
def report():
    """What needs a look: failing checks, overdue subscriptions, dead tasks, silent nodes..."""
    return build_report(db.session, sites=context.sites(), policy=context.policy()).as_dict()
