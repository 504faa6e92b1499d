"""Settings shared by both sides: defaults, then ``config.py``, then ``FETCHFLEET_*`` variables.

The coordinator and the client read the same kind of file so an operator keeps one
documented ``config.py`` (see ``config.py.example``) per machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "FETCHFLEET_"
CONFIG_PATH_VARIABLE = "FETCHFLEET_CONFIG"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.py"


class ConfigError(Exception):
    """A setting is missing, malformed or out of range; the message names it."""


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Run a Python settings file and return its UPPERCASE names, as Flask's ``from_pyfile`` does."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    namespace: dict[str, Any] = {"__file__": str(path)}
    try:
        exec(compile(source, str(path), "exec"), namespace)
    except Exception as exc:  # a user's file: report any error as a config error
        raise ConfigError(f"error in config file {path}: {exc.__class__.__name__}: {exc}") from None
    return {name: value for name, value in namespace.items() if name.isupper()}


def parse_env_value(raw: str) -> Any:
    """JSON when it parses (numbers, booleans, objects), else the plain string, like Flask."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def load_settings(
    defaults: Mapping[str, Any],
    *,
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge defaults, the config file and ``FETCHFLEET_<NAME>`` overrides, in that order."""
    environ = os.environ if environ is None else environ
    settings = dict(defaults)
    if path is None:
        path = environ.get(CONFIG_PATH_VARIABLE) or None
        if path is None and DEFAULT_CONFIG_PATH.exists():
            path = DEFAULT_CONFIG_PATH
    if path is not None:
        settings.update(read_config_file(path))
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and name != CONFIG_PATH_VARIABLE:
            settings[name[len(ENV_PREFIX) :]] = parse_env_value(raw)
    return settings
