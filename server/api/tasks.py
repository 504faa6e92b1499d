"""Operator reports and actions on tasks: list (e.g. dead ones), requeue, reclaim stuck."""

from .. import context
from ..auth import auth_required
from ..extensions import db
from ..maintenance import list_tasks, reclaim_stuck, requeue_tasks
from ..models import Role
from ..schemas import CountSchema, RequeueRequestSchema, RequeueResponseSchema, TaskListSchema, TaskQuerySchema
from ..validation import validated_json
from . import ApiBlueprint

blp = ApiBlueprint("tasks", __name__, url_prefix="/tasks", description="Task reports and operator actions")


@blp.route("", methods=["GET"])
@auth_required(Role.ADMIN)
@blp.arguments(TaskQuerySchema, location="query")
@blp.response(200, TaskListSchema)
def report(query):
    """List tasks by state, kind and site, in id order (page with after_id)"""
    tasks = list_tasks(db.session, **query)
    next_after = tasks[-1]["id"] if len(tasks) == query["limit"] else None
    return {"tasks": tasks, "next_after_id": next_after}


@blp.route("/requeue", methods=["POST"])
@auth_required(Role.ADMIN)
@validated_json(RequeueRequestSchema)
@blp.response(200, RequeueResponseSchema)
def requeue(request):
    """Give dead / not-found / done tasks a fresh start (by ids, or by state; both kinds unless kind is given)"""
    by_kind = requeue_tasks(db.session, **request)
    context.dashboard().forget()  # the operator's next look shows it
    return {"count": sum(by_kind.values()), "by_kind": by_kind}


@blp.route("/reclaim", methods=["POST"])
@auth_required(Role.ADMIN)
@blp.response(200, CountSchema)
def reclaim():
    """Put the tasks of every expired lease back in the queue now"""
    return {"count": reclaim_stuck(db.session, policy=context.policy())}
