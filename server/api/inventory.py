"""Inventory upload: the same CSV import as ``flask import-csv``, over HTTP, for admins."""

from flask import current_app, request

from .. import context
from ..auth import auth_required
from ..errors import InvalidInput
from ..extensions import db
from ..inventory import import_inventory
from ..models import Role
from ..schemas import ImportReportSchema
from . import ApiBlueprint

blp = ApiBlueprint("inventory", __name__, url_prefix="/inventory", description="Import inventory CSV files")

CSV_BODY_DOC = {
    "required": True,
    "description": "A CSV file (UTF-8, optional BOM) with a header naming url or query, and optionally key, "
    "title, sites, priority and any extra columns; as the raw body (text/csv) or a multipart field 'file'.",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
    },
}


@blp.route("", methods=["POST"])
@auth_required(Role.ADMIN)
@blp.doc(requestBody=CSV_BODY_DOC)
@blp.response(200, ImportReportSchema, description="Counts, and each rejected row with its line and reason")
def upload():
    """Import inventory rows: new rows are added, changed rows update their item"""
    request.max_content_length = current_app.config["MAX_INVENTORY_UPLOAD_BYTES"]
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise InvalidInput.at(["file"], "the multipart form needs a 'file' field", location="form")
        binary = upload.stream
    else:
        binary = request.stream
    return import_inventory(
        db.session, binary, sites=context.sites(), chunk_rows=current_app.config["IMPORT_CHUNK_ROWS"]
    )
