"""The app's configured sites and lease policy, built once in ``create_app``."""

import threading

from flask import current_app

from .dashboard import Dashboard
from .events import Outbox
from .policy import LeasePolicy
from .sites import SiteRegistry

_building = threading.Lock()


def sites() -> SiteRegistry:
    return current_app.extensions["fetchfleet"]["sites"]


def policy() -> LeasePolicy:
    return current_app.extensions["fetchfleet"]["policy"]


def dashboard() -> Dashboard:
    return current_app.extensions["fetchfleet"]["dashboard"]


def events() -> Outbox:
    return current_app.extensions["fetchfleet"]["events"]


def hash_index(column: str):
    """This process's index of one perceptual hash column, built on first use."""
    from .similar import HashIndex

    indexes = current_app.extensions["fetchfleet"]["hash_indexes"]
    with _building:
        if column not in indexes:
            indexes[column] = HashIndex(column, refresh_seconds=current_app.config["SIMILAR_REFRESH_SECONDS"])
        return indexes[column]
