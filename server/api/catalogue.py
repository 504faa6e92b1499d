"""The archive catalogue: items and what they found, files and their hashes, duplicates
(exact and near), for any key holder."""

from __future__ import annotations

from flask import Response, current_app, g, redirect

from common.file_store import safe_filename

from .. import context, file_store
from ..auth import auth_required
from ..catalogue import (
    exact_duplicates,
    get_file,
    hash_of_file,
    list_files,
    list_items,
    show_item,
    similar_clusters,
    similar_files,
)
from ..extensions import db
from ..models import Role
from ..pausing import pause_item, resume_item
from ..schemas import (
    MAX_ID,
    CatalogueFileSchema,
    DuplicateListSchema,
    DuplicateQuerySchema,
    FileListSchema,
    FileQuerySchema,
    ItemDetailQuerySchema,
    ItemDetailSchema,
    ItemListSchema,
    ItemQuerySchema,
    PausedSchema,
    SimilarListSchema,
    SimilarQuerySchema,
    StoredAnswerSchema,
    StoredFilesSchema,
)
from . import ApiBlueprint

items = ApiBlueprint("items", __name__, url_prefix="/items", description="What the inventory found")
files = ApiBlueprint("files", __name__, url_prefix="/files", description="Files the archive holds")
duplicates = ApiBlueprint("duplicates", __name__, url_prefix="/duplicates", description="Duplicate content")


@items.route("", methods=["GET"])
@auth_required(Role.CLIENT)
@items.arguments(ItemQuerySchema, location="query")
@items.response(200, ItemListSchema)
def item_list(query):
    """Inventory items in id order, by state, site, or text in key / title / query (page with cursor)"""
    text = query.pop("q", None)
    page = list_items(db.session, text=text, **query)
    return {"items": page.rows, "next_cursor": page.next_cursor}


@items.route("/<path:key>", methods=["GET"])
@auth_required(Role.CLIENT)
@items.arguments(ItemDetailQuerySchema, location="query")
@items.response(200, ItemDetailSchema)
def item_detail(query, key):
    """One item: its metadata task per site, the posts it found (their download tasks) and their files"""
    return show_item(db.session, key, **query)


@items.route("/<path:key>/pause", methods=["POST"])
@auth_required(Role.ADMIN)
@items.response(200, PausedSchema)
def item_pause(key):
    """Pause an item: its waiting tasks are not leased until it is resumed (leased ones finish)"""
    return {"key": key, "paused": True, "tasks": pause_item(db.session, key)}


@items.route("/<path:key>/resume", methods=["POST"])
@auth_required(Role.ADMIN)
@items.response(200, PausedSchema)
def item_resume(key):
    """Resume a paused item"""
    return {"key": key, "paused": False, "tasks": resume_item(db.session, key)}


@files.route("", methods=["GET"])
@auth_required(Role.CLIENT)
@files.arguments(FileQuerySchema, location="query")
@files.response(200, FileListSchema)
def file_list(query):
    """File records in id order, by sha256, md5, site, node, item, MIME type and time (page with cursor)"""
    page = list_files(db.session, **query)
    return {"files": page.rows, "next_cursor": page.next_cursor}


@files.route("/similar", methods=["GET"])
@auth_required(Role.CLIENT)
@files.arguments(SimilarQuerySchema, location="query")
@files.response(200, SimilarListSchema)
def file_similar(query):
    """Reverse image search: files whose perceptual hash is within distance bits, nearest first (exact)"""
    exclude = None
    if "file" in query:
        column = query.get("hash", "phash")
        value = hash_of_file(db.session, query["file"], column)
        exclude = query["file"]
    else:
        column = "phash" if "phash" in query else "dhash"
        value = int(query[column], 16)
    index = context.hash_index(column)
    found = similar_files(
        db.session, index, value=value, distance=query["distance"], limit=query["limit"], exclude=exclude
    )
    return {"hash": column, "query": f"{value:016x}", "distance": query["distance"], "files": found}


@files.route(f"/<int(max={MAX_ID}):file_id>", methods=["GET"])
@auth_required(Role.CLIENT)
@files.response(200, CatalogueFileSchema)
def file_detail(file_id):
    """One file record: its task, item, node, path, size and hashes"""
    return get_file(db.session, file_id)


@files.route(f"/<int(max={MAX_ID}):file_id>/content", methods=["GET"])
@auth_required(Role.CLIENT)
@files.doc(
    responses={
        "200": {
            "description": "The bytes, streamed through the coordinator (FILE_STORE_SERVE = stream)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        "302": {"description": "A short-lived presigned URL of the file store (FILE_STORE_SERVE = redirect)"},
        "404": {"description": "No such file, or it is not in the file store (only on its node)"},
        "503": {"description": "No file store configured, or it does not answer"},
    }
)
def file_content(file_id):
    """The file's bytes, from the central file store: a redirect to a presigned URL, or streamed"""
    content = file_store.locate(db.session, file_id)
    if current_app.config["FILE_STORE_SERVE"] == "redirect":
        return redirect(file_store.presigned_url(content), 302)
    chunks, size = file_store.stream(content)
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{safe_filename(content.filename)}"',
        "ETag": f'"{content.file["sha256"]}"',
    }
    return Response(chunks, mimetype=content.file.get("mime") or "application/octet-stream", headers=headers)


@files.route("/stored", methods=["POST"])
@auth_required(Role.CLIENT)
@files.arguments(StoredFilesSchema)
@files.response(200, StoredAnswerSchema)
def files_stored(body):
    """A node moved files it reported earlier into the file store (python -m client store upload-existing)"""
    return file_store.record_stored(db.session, g.client, body["files"])


@duplicates.route("", methods=["GET"])
@auth_required(Role.CLIENT)
@duplicates.arguments(DuplicateQuerySchema, location="query")
@duplicates.response(200, DuplicateListSchema)
def duplicate_list(query):
    """Content held more than once: exact (same sha256, most wasted bytes first) or similar clusters"""
    if query["kind"] == "exact":
        page = exact_duplicates(db.session, limit=query["limit"], cursor=query.get("cursor"))
        return {"kind": "exact", "distance": None, "groups": page.rows, "next_cursor": page.next_cursor}
    index = context.hash_index(query.get("hash", "phash"))
    page = similar_clusters(
        db.session, index, distance=query["distance"], limit=query["limit"], cursor=query.get("cursor")
    )
    return {"kind": "similar", "distance": query["distance"], "groups": page.rows, "next_cursor": page.next_cursor}
