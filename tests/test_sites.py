"""Site registry: config validation, URL matching, concrete search and download URLs."""

from __future__ import annotations

import pytest

from common.settings import ConfigError
from server.sites import SiteRegistry

SITES = {
    "booru": {
        "engine": "gallery-dl",
        "search_url": "http://booru.test/post?tags={query}",
        "url_patterns": [r"^https?://booru\.test/"],
        "post_url": "http://booru.test/post/show/{id}",
    },
    "tube": {"engine": "yt-dlp", "url_patterns": [r"^https?://(www\.)?tube\.test/"]},
}


def test_lookup_by_name_and_url():
    sites = SiteRegistry.from_config(SITES)
    assert sites.names() == ["booru", "tube"] and "tube" in sites and len(sites) == 2
    assert sites.for_url("https://www.tube.test/watch/1").name == "tube"
    assert sites.for_url("http://elsewhere.test/") is None


def test_search_url_quotes_the_query():
    booru = SiteRegistry.from_config(SITES).get("booru")
    assert booru.search_url_for("blue sky&rating:s") == "http://booru.test/post?tags=blue%20sky%26rating%3As"


def test_download_url_from_post_url_or_reported():
    sites = SiteRegistry.from_config(SITES)
    assert sites.get("booru").download_url_for("7", {"id": 7}, None) == "http://booru.test/post/show/7"
    assert sites.get("booru").download_url_for("7", {}, "http://x.test/7") == "http://x.test/7"  # {id} missing
    assert sites.get("tube").download_url_for("v1", {}, "http://tube.test/v1") == "http://tube.test/v1"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"Bad Name": {"engine": "yt-dlp"}}, "site name"),
        ({"a": {"engine": "wget"}}, "engine must be one of"),
        ({"a": {"engine": "yt-dlp", "search_url": "http://a.test/"}}, "{query}"),
        ({"a": {"engine": "yt-dlp", "url_patterns": "^http"}}, "list of regular expressions"),
        ({"a": {"engine": "yt-dlp", "url_patterns": ["("]}}, "not a regular expression"),
        ({"a": {"engine": "yt-dlp", "max_in_flight": 0}}, "max_in_flight"),
        ({"a": {"engine": "yt-dlp", "colour": "red"}}, "unknown setting"),
        ({"a": {"engine": "yt-dlp", "options": []}}, "options must be a mapping"),
        ([], "SITES must be a mapping"),
    ],
)
def test_bad_site_config_names_the_problem(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("{", r"\{")):
        SiteRegistry.from_config(spec)


def test_options_every_node_would_refuse_stop_the_coordinator_at_start_naming_the_site():
    from common.settings import ConfigError
    from server.sites import SiteRegistry

    exec_hook = {"extractor": {"postprocessors": [{"name": "exec", "command": "id"}]}}
    with pytest.raises(ConfigError, match=r"SITES\['mybooru'\]: nodes would refuse this site: options.extractor"):
        SiteRegistry.from_config({"mybooru": {"engine": "gallery-dl", "options": exec_hook}})
    with pytest.raises(ConfigError, match=r"SITES\['tube'\].*options.cookiefile: not an option"):
        SiteRegistry.from_config({"tube": {"engine": "yt-dlp", "options": {"cookiefile": "/home/u/c.txt"}}})
    instance = {"extractor": {"moebooru": {"mybooru": {"root": "https://booru.example"}}}}
    assert SiteRegistry.from_config({"mybooru": {"engine": "gallery-dl", "options": instance}}).get("mybooru")
