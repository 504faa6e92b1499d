"""Settings: defaults, then config.py, then FETCHFLEET_* variables; bad values fail loudly."""

from __future__ import annotations

import pytest

from common.settings import ConfigError, load_settings, parse_env_value
from server.settings import DEFAULTS, validate


def test_file_overrides_defaults_and_environment_overrides_file(tmp_path):
    config = tmp_path / "config.py"
    config.write_text("DATABASE_URL = 'sqlite:///from-file.db'\nMETADATA_LEASE_SECONDS = 60\nlowercase = 1\n")
    settings = load_settings(
        DEFAULTS, environ={"FETCHFLEET_CONFIG": str(config), "FETCHFLEET_METADATA_LEASE_SECONDS": "90"}
    )
    assert settings["DATABASE_URL"] == "sqlite:///from-file.db"
    assert settings["METADATA_LEASE_SECONDS"] == 90
    assert settings["DOWNLOAD_LEASE_SECONDS"] == DEFAULTS["DOWNLOAD_LEASE_SECONDS"]
    assert "lowercase" not in settings


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("60", 60),
        ("true", True),
        ('{"a": {"engine": "yt-dlp"}}', {"a": {"engine": "yt-dlp"}}),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("null", None),
    ],
)
def test_environment_values_are_json_or_plain_strings(raw, value):
    assert parse_env_value(raw) == value


def test_missing_or_broken_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(DEFAULTS, environ={"FETCHFLEET_CONFIG": str(tmp_path / "missing.py")})
    broken = tmp_path / "broken.py"
    broken.write_text("SITES = {\n")
    with pytest.raises(ConfigError, match=r"error in config file .*broken\.py: SyntaxError"):
        load_settings(DEFAULTS, environ={"FETCHFLEET_CONFIG": str(broken)})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("METADATA_LEASE_SECONDS", 0, "positive integer"),
        ("DOWNLOAD_MAX_ATTEMPTS", "5", "positive integer"),
        ("RETRY_BACKOFF_SECONDS", True, "positive integer"),
        ("DATABASE_URL", "", "DATABASE_URL"),
        ("MIN_CLIENT_VERSION", "not a version!", "MIN_CLIENT_VERSION"),
    ],
)
def test_invalid_settings_are_refused_at_start(name, value, message):
    with pytest.raises(ConfigError, match=message):
        validate({**DEFAULTS, name: value})


def test_create_app_refuses_a_bad_site(tmp_path):
    from server import create_app

    with pytest.raises(ConfigError, match=r"SITES\['x'\].engine"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "SITES": {"x": {"engine": "wget"}}})


def test_config_example_is_valid_python_with_known_settings():
    from common.settings import REPO_ROOT, read_config_file

    example = read_config_file(REPO_ROOT / "config.py.example")
    from client.settings import DEFAULTS as CLIENT_DEFAULTS

    unknown = set(example) - set(DEFAULTS) - set(CLIENT_DEFAULTS)
    assert not unknown, f"config.py.example sets unknown names: {unknown}"
    validate({**DEFAULTS, **{k: v for k, v in example.items() if k in DEFAULTS}})
