"""Anchors: import what the archive already has, so it is never fetched again (admins)."""

from flask import current_app, request

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..known import import_known
from ..models import Role
from ..schemas import KnownQuerySchema, KnownReportSchema
from . import ApiBlueprint

blp = ApiBlueprint("known", __name__, url_prefix="/known", description="Anchors: files the archive already has")

BODY_DOC = {
    "required": True,
    "description": "A CSV with a header of site, remote_id, url, sha256, md5 (any of them), or a gallery-dl "
    "--download-archive SQLite file (then name the site); as the raw body.",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/vnd.sqlite3": {"schema": {"type": "string", "format": "binary"}},
    },
}


@blp.route("", methods=["POST"])
@auth_required(Role.ADMIN)
@blp.arguments(KnownQuerySchema, location="query")
@blp.doc(requestBody=BODY_DOC)
@blp.response(200, KnownReportSchema, description="Rows read, anchors added; 400 lists bad rows, nothing imported")
def upload(query):
    """Import anchors, all or nothing: found posts they name are never downloaded"""
    request.max_content_length = current_app.config["MAX_KNOWN_UPLOAD_BYTES"]
    return import_known(
        db.session,
        request.stream,
        sites=context.sites(),
        source=query.get("source", "upload"),
        site=query.get("site"),
    )
