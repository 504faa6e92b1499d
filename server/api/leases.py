"""The node protocol: lease tasks, heartbeat, release, and submit results."""

import json
import re
from typing import Any

from flask import Response, g, request

from .. import context
from ..auth import auth_required
from ..errors import NotFound
from ..extensions import db
from ..leasing import Grant, SubmitOutcome, extend_lease, lease_tasks, release_lease, submit_results
from ..metrics import LEASE_REQUESTS, count_results
from ..models import Role
from ..schemas import (
    ErrorBodySchema,
    ExtendRequestSchema,
    LeaseRequestSchema,
    LeaseSchema,
    LeaseStateSchema,
    ReleaseRequestSchema,
    ReleaseResponseSchema,
    SubmitRequestSchema,
    SubmitResponseSchema,
)
from ..sites import SiteRegistry
from ..validation import validated_json
from . import ApiBlueprint

blp = ApiBlueprint("leases", __name__, url_prefix="/leases", description="Lease tasks and report their results")
#: What ``secrets.token_urlsafe`` makes: anything else names no lease (and never reaches SQL).
_LEASE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


@blp.before_request
def _known_shape_of_lease_id():
    lease_id = (request.view_args or {}).get("lease_id")
    if lease_id is not None and not _LEASE_ID.fullmatch(lease_id):
        raise NotFound(f"no lease {lease_id[:100]!r}")


@blp.route("", methods=["POST"])
@auth_required(Role.CLIENT, client_protocol=True)
@validated_json(LeaseRequestSchema)
@blp.response(201, LeaseSchema, description="A lease with 1..n tasks")
@blp.alt_response(200, schema=LeaseSchema, description="Nothing available now: no lease, and retry_after")
def create_lease(request):
    """Lease up to n queued tasks of one kind (and one site for downloads)"""
    grant = lease_tasks(
        db.session,
        client=g.client,
        kind=request["kind"],
        n=request["n"],
        site=request.get("site"),
        lease_seconds=request.get("lease_seconds"),
        sites=context.sites(),
        policy=context.policy(),
        events=context.events(),
    )
    LEASE_REQUESTS.labels(request["kind"], "granted" if grant.lease else "empty").inc()
    body = lease_body(grant, request["kind"], request.get("site"), context.sites())
    return Response(json.dumps(body), status=201 if grant.lease else 200, mimetype="application/json")


def lease_body(grant: Grant, kind: str, site: str | None, sites: SiteRegistry) -> dict[str, Any]:
    """The lease as ``LeaseSchema`` describes it, built directly: dumping 100 tasks through
    marshmallow cost 6 ms per lease (``tests/test_api.py`` checks both stay identical)."""
    lease = grant.lease
    used = {task["site"] for task in grant.tasks}
    return {
        "lease_id": lease.id if lease else None,
        "kind": kind,
        "site": site,
        "expires_at": lease.expires_at.isoformat() if lease else None,
        "tasks": [_task_body(task) for task in grant.tasks],
        "sites": {name: sites.get(name).describe() for name in used if name in sites},
        "retry_after": grant.retry_after,
    }


def _task_body(task: dict[str, Any]) -> dict[str, Any]:
    body = {
        "id": task["id"],
        "kind": task["kind"],
        "site": task["site"],
        "url": task["url"],
        "remote_id": task["remote_id"],
        "priority": task["priority"],
        "attempts": task["attempts"],
        "metadata": task["payload"],
    }
    if "item" in task:  # metadata tasks carry their inventory item
        body["item"] = task["item"]
    if "check" in task:  # and, for a subscription, which check this is and where it may stop
        body["check"] = task["check"]
    if "video" in task:  # downloads of a yt-dlp site: format, container, limits
        body["video"] = task["video"]
    return body


@blp.route("/<lease_id>/extend", methods=["POST"])
@auth_required(Role.CLIENT, client_protocol=True)
@validated_json(ExtendRequestSchema)
@blp.response(200, LeaseStateSchema)
@blp.alt_response(409, schema=ErrorBodySchema, description="The lease ended (its state says how): no more heartbeats")
def extend(request, lease_id):
    """Heartbeat: push the lease's expiry out by seconds (default: the lease's own length)"""
    return extend_lease(
        db.session, lease_id=lease_id, client=g.client, seconds=request.get("seconds"), policy=context.policy()
    )


@blp.route("/<lease_id>/release", methods=["POST"])
@auth_required(Role.CLIENT, client_protocol=True)
@validated_json(ReleaseRequestSchema)
@blp.response(200, ReleaseResponseSchema)
def release(request, lease_id):
    """Hand unfinished tasks back to the queue without charging an attempt"""
    released = release_lease(db.session, lease_id=lease_id, client=g.client, task_ids=request.get("task_ids"))
    return {"released": released}


@blp.route("/<lease_id>/results", methods=["POST"])
@auth_required(Role.CLIENT, client_protocol=True)
@validated_json(SubmitRequestSchema)
@blp.response(200, SubmitResponseSchema, description="Every result recorded (or already recorded)")
@blp.alt_response(409, schema=SubmitResponseSchema, description="Some tasks are no longer held by this lease")
def submit(request, lease_id):
    """Submit results; tasks this lease no longer holds are refused, the others recorded"""
    outcome = submit_results(
        db.session,
        lease_id=lease_id,
        client=g.client,
        results=request["results"],
        sites=context.sites(),
        policy=context.policy(),
        events=context.events(),
    )
    count_results(outcome.kind, outcome.site, request["results"], set(outcome.accepted))
    code = 409 if outcome.conflicts else 200
    message = f"{len(outcome.accepted)} accepted, {len(outcome.unchanged)} already recorded"
    if outcome.conflicts:
        message += f", {len(outcome.conflicts)} refused: this lease no longer holds task(s) " + ", ".join(
            str(task_id) for task_id in outcome.conflicts[:20]
        )
    return Response(json.dumps(submit_body(outcome, code, message)), status=code, mimetype="application/json")


def submit_body(outcome: SubmitOutcome, code: int, message: str) -> dict[str, Any]:
    """The answer as ``SubmitResponseSchema`` describes it, built directly: flask-smorest's
    dump-and-jsonify of it cost ~0.4 ms per submit (``tests/test_api.py`` checks both stay
    identical)."""
    return {
        "code": code,
        "status": "OK" if code == 200 else "Conflict",
        "message": message,
        "accepted": outcome.accepted,
        "unchanged": outcome.unchanged,
        "conflicts": outcome.conflicts,
        "download_tasks_created": outcome.download_tasks_created,
    }
