"""The app's configured sites and lease policy, built once in ``create_app``."""

from flask import current_app

from .policy import LeasePolicy
from .sites import SiteRegistry


def sites() -> SiteRegistry:
    return current_app.extensions["fetchfleet"]["sites"]


def policy() -> LeasePolicy:
    return current_app.extensions["fetchfleet"]["policy"]
