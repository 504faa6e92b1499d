"""Video orders: presets and selectors checked where they enter (SITES, the CSV, a lease
as a node sees it), carried by download leases with an item's own columns winning, and
video files' probed durations counted per site. Both backends where a database is used."""

from __future__ import annotations

import hashlib
import io

import pytest

from common.settings import ConfigError
from common.video import PRESETS, BadChoice, VideoChoice, check_order, over_limit
from server import context
from server.auth import create_key
from server.inventory import import_inventory
from server.models import ApiKey, Role
from server.sites import SiteRegistry
from tests.helpers import file_record
from tests.test_leasing import lease, submit

TUBE = {"engine": "yt-dlp", "url_patterns": [r"^https?://tube\.test/"]}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"format": "4k"}, "'4k' is not a preset; the presets are best, 1080p, 720p, 480p, audio, video-only"),
        ({"format": "bestvideo[height<="}, "not a valid yt-dlp format selector"),
        ({"format": "best; rm -rf /"}, "neither a preset"),
        ({"merge_output_format": "avi"}, "merge_output_format must be one of mp4, mkv, webm"),
        ({"max_duration_seconds": 0}, "max_duration_seconds must be a whole number from 1"),
        ({"max_filesize_bytes": "big"}, "max_filesize_bytes must be a whole number"),
    ],
)
def test_a_bad_video_setting_stops_the_coordinator_naming_the_site(setting, message):
    with pytest.raises(ConfigError, match=r"SITES\['tube'\]: ") as raised:
        SiteRegistry.from_config({"tube": {**TUBE, **setting}})
    assert message in str(raised.value)


def test_video_settings_belong_to_yt_dlp_sites_and_are_said_once():
    with pytest.raises(ConfigError, match="apply to yt-dlp sites only"):
        SiteRegistry.from_config({"booru": {"engine": "gallery-dl", "format": "best"}})
    with pytest.raises(ConfigError, match=r"options\.format and the site's own setting say the same thing"):
        SiteRegistry.from_config({"tube": {**TUBE, "format": "720p", "options": {"format": "best"}}})
    site = SiteRegistry.from_config({"tube": {**TUBE, "format": "720p", "max_duration_seconds": 1800}}).get("tube")
    assert site.video.as_order() == {"format": PRESETS["720p"], "preset": "720p", "max_duration_seconds": 1800}


def test_an_unknown_preset_or_a_bad_selector_in_the_csv_rejects_that_row_only(session):
    text = (
        "key,url,format,max_duration_seconds\n"
        "a,http://tube.test/a,720p,\n"
        "b,http://tube.test/b,1440p,\n"
        "c,http://tube.test/c,bv*[height<=720]+ba/b,600\n"
        "d,http://tube.test/d,best[height<=abc],\n"
        "e,http://tube.test/e,,ten minutes\n"
    )
    report = import_inventory(session, io.StringIO(text, newline=""), sites=context.sites())
    assert (report.added, report.rejected) == (2, 3)
    assert [str(error) for error in report.errors] == [
        "line 3: format '1440p' is not a preset; the presets are best, 1080p, 720p, 480p, audio, video-only",
        "line 5: format 'best[height<=abc]' is not a valid yt-dlp format selector: "
        "Invalid filter specification 'height<=abc'",
        "line 6: max_duration_seconds must be a whole number, got 'ten minutes'",
    ]


def test_a_download_lease_carries_the_sites_order_with_its_items_own_columns_winning(app_factory):
    from server.extensions import db

    app = app_factory(SITES={"tube": {**TUBE, "format": "720p", "max_duration_seconds": 1800}})
    with app.app_context():
        session = db.session
        create_key(session, "node1", Role.CLIENT)
        node = session.query(ApiKey).filter_by(name="node1").one()
        text = "key,url,format,max_duration_seconds\nown,http://tube.test/own,audio,\nplain,http://tube.test/plain,,\n"
        import_inventory(session, io.StringIO(text, newline=""), sites=context.sites())
        grant = lease(session, node, "metadata", site=None)
        results = [
            {
                "task_id": task["id"],
                "status": "done",
                "found": [
                    {"site": "tube", "remote_id": task["item"]["key"], "url": f"http://tube.test/v/{task['id']}"}
                ],
            }
            for task in grant.tasks
        ]
        submit(session, node, grant, results)
        orders = {task["remote_id"]: task["video"] for task in lease(session, node, "download", site="tube").tasks}
        assert orders == {
            "own": {"format": PRESETS["audio"], "preset": "audio", "max_duration_seconds": 1800},
            "plain": {"format": PRESETS["720p"], "preset": "720p", "max_duration_seconds": 1800},
        }
        session.rollback()


def test_video_time_is_counted_per_site_and_equals_a_recount(app, session):
    """The suite's own check (kept counts == a recount) runs after this test too."""
    create_key(session, "node1", Role.CLIENT)
    node = session.query(ApiKey).filter_by(name="node1").one()
    import_inventory(session, io.StringIO("key,url\nv,http://tube.test/v\n", newline=""), sites=context.sites())
    metadata = lease(session, node, "metadata", site=None)
    found = [{"site": "tube", "remote_id": f"v{n}", "url": f"http://tube.test/v/{n}"} for n in range(3)]
    submit(session, node, metadata, [{"task_id": metadata.tasks[0]["id"], "status": "done", "found": found}])
    grant = lease(session, node, "download", site="tube")
    assert [task.get("video") for task in grant.tasks] == [None] * 3  # nothing asked: the node's own choice
    probed = {"width": 1280, "height": 720, "vcodec": "h264", "acodec": "aac", "container": "mp4"}
    results = [
        {
            "task_id": task["id"],
            "status": "done",
            "files": [file_record(f"tube/{task['id']}.mp4", mime="video/mp4", video={**probed, "duration": 1800.5})],
        }
        for task in grant.tasks
    ]
    results[0]["files"].append(file_record("tube/cover.jpg", mime="image/jpeg"))  # no probe: no video time
    submit(session, node, grant, results)
    from server.stats import collect_stats

    stats = collect_stats(session, sites=context.sites())
    assert stats["sites"]["tube"]["video_hours"] == round(3 * 1800.5 / 3600, 3)


@pytest.mark.parametrize(
    ("order", "problem"),
    [
        ({"format": "bv*+ba/b", "exec": "id"}, "video.exec: not something a lease may ask"),
        ({"format": "best[height<=abc]"}, "video.format"),
        ({"format": "bv*+ba/b", "preset": "audio"}, "video.preset: 'audio' does not name this format"),
        ({"format": "b", "merge_output_format": "exe"}, "merge_output_format must be one of"),
        ({"format": "b", "max_duration_seconds": "60"}, "video.max_duration_seconds: must be a whole number"),
        ("best", "video: must be a mapping"),
    ],
)
def test_a_node_refuses_a_video_order_it_cannot_trust(order, problem):
    with pytest.raises(BadChoice, match="^" + problem.replace("[", r"\[").replace("*", r"\*").replace("+", r"\+")):
        check_order(order)


def test_limits_say_which_and_by_how_much():
    order = VideoChoice(max_duration_seconds=1800, max_filesize_bytes=10_000_000).as_order()
    assert over_limit(order, duration=3600) == "over limit: 3600 s > 1800 s"
    assert over_limit(order, duration=1800, filesize=25_000_000) == "over limit: 25000000 bytes > 10000000 bytes"
    assert over_limit(order, duration=None, filesize=None) is None
    assert over_limit(None, duration=10**6) is None


def test_print_templates_a_node_sets_still_print(capsys):
    """A node's engine skips yt-dlp's per-video tables when nothing prints them; a print
    template of the node's own (which may name a table) still gets everything."""
    from client.engines.yt_dlp import _ConfinedYoutubeDL

    info = {"id": "clip", "ext": "mp4", "title": "A clip", "url": "http://127.0.0.1/clip.mp4"}
    with _ConfinedYoutubeDL({"quiet": True}) as silent:
        assert "formats_table" not in silent._forceprint("video", info)
    with _ConfinedYoutubeDL({"quiet": True, "forceprint": {"video": ["%(title)s|%(urls)s"]}}) as printing:
        assert "formats_table" in printing._forceprint("video", info)
    with _ConfinedYoutubeDL({"quiet": True, "forcetitle": True}) as titled:
        assert "formats_table" in titled._forceprint("video", info)
    assert capsys.readouterr().out.splitlines()[0] == "A clip|http://127.0.0.1/clip.mp4"


def test_the_demo_streams_build_to_the_same_bytes_every_time(tmp_path, ffmpeg):
    from demo.streams import STREAMS, _build_hls

    digests = []
    for attempt in ("a", "b"):
        _build_hls(ffmpeg, STREAMS["hls-07"], tmp_path / attempt)
        files = sorted(path for path in (tmp_path / attempt).rglob("*") if path.is_file())
        digests.append({path.relative_to(tmp_path / attempt).as_posix(): _sha(path) for path in files})
    assert len(digests[0]) > 6 and digests[0] == digests[1]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_probe_reads_what_a_file_holds_and_nothing_from_bytes_that_are_no_media(tmp_path):
    from client.probe import probe, probed
    from common.settings import REPO_ROOT

    clip = REPO_ROOT / "demo" / "media" / "clip4.webm"
    assert probe(clip) == {
        "duration": 1.0,
        "width": 96,
        "height": 64,
        "vcodec": "vp8",
        "acodec": None,
        "container": "webm",
    }
    garbage = tmp_path / "video.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)  # a header, then nonsense
    assert probe(garbage) is None
    cut = tmp_path / "cut.webm"
    cut.write_bytes(clip.read_bytes()[:200])
    assert probe(cut) is None  # half a header: no streams to speak of
    said = {"duration": 12.5, "width": 640, "height": 360, "vcodec": "avc1.64001f", "acodec": "mp4a.40.2", "ext": "mp4"}
    assert probed(garbage, said) == {
        "duration": 12.5,
        "width": 640,
        "height": 360,
        "vcodec": "avc1",
        "acodec": "mp4a",
        "container": "mp4",
    }
