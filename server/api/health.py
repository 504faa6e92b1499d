"""``GET /health``: for load balancers and start-up scripts; checks the database answers."""

from sqlalchemy import text

from common.version import __version__

from ..database import read_only
from ..extensions import db
from ..schemas import HealthSchema
from . import ApiBlueprint

blp = ApiBlueprint("health", __name__, url_prefix="/health", description="Liveness")


@blp.route("", methods=["GET"])
@blp.response(200, HealthSchema)
def health():
    """The coordinator is up and its database answers"""
    read_only(db.session)
    db.session.execute(text("SELECT 1"))
    db.session.commit()
    return {"status": "ok", "version": __version__, "database": db.engine.dialect.name}
