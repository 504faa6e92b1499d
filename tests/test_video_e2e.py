"""Video as streaming sites serve it, end to end: the demo site's HLS and DASH streams
(built by ffmpeg), the real coordinator under gunicorn, real ``python -m client`` nodes
running yt-dlp and ffmpeg; every file checked by probing it (ffprobe)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests

from tests.fleet import Fleet

pytestmark = pytest.mark.e2e

INVENTORY = """key,url,title,format,max_duration_seconds,max_filesize_bytes
hls-best,{root}/stream/hls-01,HLS at its best,best,,
hls-480,{root}/stream/hls-05,HLS at 480p or below,480p,,
hls-audio,{root}/stream/hls-06,HLS sound only,audio,,
dash-best,{root}/stream/dash-01,DASH merged,,,
sources-480,{root}/stream/sources-01,Three progressive sizes,480p,,
long,{root}/stream/long-01,An hour: over the limit,,1800,
flaky,{root}/stream/flaky-01,A segment fails once,,,
broken,{root}/stream/broken-01,A segment is gone,,,
dropped,{root}/stream/dropped-01,A segment's connection drops halfway,,,
big,{root}/stream/hls-07,Too big at its best,best,,150000
small,{root}/stream/hls-08,Small enough at 480p,480p,,150000
"""
SOURCE_SECONDS = 2.0


@pytest.fixture
def fleet(demo_site, tmp_path, ffmpeg):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    fleet = Fleet.start(demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}")
    yield fleet
    fleet.stop()


def probe(path) -> dict:
    answer = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    )
    found = json.loads(answer.stdout)
    return {
        "video": [s for s in found["streams"] if s["codec_type"] == "video"],
        "audio": [s for s in found["streams"] if s["codec_type"] == "audio"],
        "duration": float(found["format"]["duration"]),
    }


def run(fleet: Fleet, jobs: str = "2", node: str = "node1") -> None:
    metadata = fleet.client("metadata", "100", "--jobs", "2", node=node)
    assert metadata.returncode == 0, metadata.stderr
    fleet.drain("download", "demotube", "20", "--jobs", jobs, node=node)


def test_streams_download_as_one_file_per_video_in_the_format_asked(fleet):
    report = fleet.import_csv(INVENTORY)
    assert report["rejected"] == 0, report
    run(fleet)
    dest = fleet.dest() / "demotube"
    tasks = {task["url"].rsplit("/", 1)[-1]: task for task in fleet.admin("GET", "/tasks?kind=download")["tasks"]}

    best = probe(dest / "hls-01.mp4")  # 720p video and the separate audio rendition, merged
    assert len(best["video"]) == 1 and len(best["audio"]) == 1
    assert best["video"][0]["codec_name"] == "h264" and best["audio"][0]["codec_name"] == "aac"
    assert best["video"][0]["height"] == 720
    assert abs(best["duration"] - SOURCE_SECONDS) <= 0.5

    low = probe(dest / "hls-05.mp4")
    assert low["video"][0]["height"] <= 480 and len(low["audio"]) == 1

    sound = probe(next(dest.glob("hls-06.*")))
    assert sound["video"] == [] and len(sound["audio"]) == 1

    dash = probe(dest / "dash-01.mp4")
    assert len(dash["video"]) == 1 and len(dash["audio"]) == 1 and dash["video"][0]["height"] == 720

    sources = probe(next(dest.glob("sources-01*.mp4")))
    assert sources["video"][0]["height"] == 480

    # the flaky segment was asked for again and the video came out whole
    paths = fleet.site_counter()["paths"]
    assert paths.get("/streams/flaky-01/720/seg_001.ts", 0) >= 2
    assert abs(probe(dest / "flaky-01.mp4")["duration"] - SOURCE_SECONDS) <= 0.5

    # over the limit: refused from the metadata, not one media request
    assert tasks["long-01"]["state"] == "dead" and tasks["long-01"]["attempts"] == 1, tasks["long-01"]
    assert tasks["long-01"]["last_error"] == "over limit: 3600 s > 1800 s"
    assert not [path for path in paths if path.startswith("/streams/long-01/") and path.endswith(".ts")]

    # a size limit is weighed against the format this download chose (yt-dlp's estimate
    # from the variant's bitrate and the duration), before any of its media is asked for
    assert tasks["hls-07"]["state"] == "dead", tasks["hls-07"]
    assert (
        tasks["hls-07"]["last_error"].startswith("over limit: ")
        and " bytes > 150000 bytes" in tasks["hls-07"]["last_error"]
    )
    assert not [path for path in paths if path.startswith("/streams/hls-07/") and path.endswith(".ts")]
    assert probe(dest / "hls-08.mp4")["video"][0]["height"] == 360

    # a stream whose segment is gone, or whose segment's connection drops halfway every
    # time: transient, nothing recorded, nothing left behind
    for name in ("broken-01", "dropped-01"):
        assert tasks[name]["state"] != "done" and tasks[name]["error_class"] == "transient", tasks[name]
        assert not list(dest.glob(f"{name}*"))
    assert paths.get("/streams/dropped-01/720/seg_001.ts", 0) >= 2  # the fragment was tried again
    files = [path.name for path in fleet.dest().rglob("*") if path.is_file()]
    assert [name for name in files if ".part" in name or "Frag" in name or name.endswith(".ytdl")] == []

    # each file record says what the probe found; /stats adds the video time per site
    records = {record["remote_id"]: record for record in fleet.files()}
    assert "broken" not in " ".join(records) and "dropped" not in " ".join(records)
    sidecar = json.loads((dest / "hls-01.mp4.json").read_text())
    assert sidecar["fetchfleet"]["video"]["height"] == 720 and sidecar["fetchfleet"]["video"]["acodec"] == "aac"
    durations = fleet.video_durations()
    assert len(durations) == 7 and all(abs(seconds - SOURCE_SECONDS) <= 0.5 for seconds in durations)
    hours = fleet.stats()["sites"]["demotube"]["video_hours"]
    assert hours == pytest.approx(sum(durations) / 3600, abs=0.001)


def test_four_jobs_give_the_same_files_as_one(fleet):
    rows = "".join(f"hls-{n:02d},{{root}}/stream/hls-{n:02d},HLS clip {n}\n" for n in range(1, 21))
    fleet.import_csv("key,url,title\n" + rows)
    run(fleet, jobs="1", node="node1")
    fleet.admin("POST", "/tasks/requeue", json={"state": "done", "kind": "download"})
    fleet.drain("download", "demotube", "20", "--jobs", "4", node="node2")
    one, four = (
        {path.name: path.read_bytes() for path in (fleet.dest(node) / "demotube").glob("*.mp4")}
        for node in ("node1", "node2")
    )
    assert len(one) == 20
    assert one.keys() == four.keys()
    different = [name for name in one if one[name] != four[name]]
    assert different == []


def test_a_node_without_ffmpeg_says_so_before_leasing(fleet, tmp_path):
    fleet.import_csv(INVENTORY)
    bare = tmp_path / "bin"
    bare.mkdir()
    result = fleet.client("download", "demotube", "5", env={"PATH": str(bare)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: ffmpeg and ffprobe not found: yt-dlp sites need ffmpeg to merge video and audio streams "
        "(Debian: apt-get install ffmpeg; or set YT_DLP_OPTIONS['ffmpeg_location'])"
    ]
    assert fleet.stats()["leases"]["active"] == 0


def test_a_size_known_only_once_downloaded_still_refuses_and_keeps_nothing(demo_site, tmp_path, ffmpeg):
    """A direct file announces no size before it is fetched: the limit is applied to what
    was written, which is removed."""
    from client.engines.base import Failure
    from client.engines.yt_dlp import YtDlpEngine

    engine = YtDlpEngine({}, {"demotube": {"engine": "yt-dlp", "options": {}}})
    directory, partial = tmp_path / "demotube", tmp_path / "partial"
    partial.mkdir(parents=True)
    directory.mkdir()
    task = {"video": {"max_filesize_bytes": 100}, "metadata": {}}
    with pytest.raises(Failure) as refused:
        engine.download(demo_site.url + "/media/clip1.mp4", "demotube", directory, partial, task)
    assert refused.value.error_class == "permanent"
    expected = r"over limit: \d+ bytes > 100 bytes \(known only once downloaded; not kept\)"
    assert re.fullmatch(expected, refused.value.message), refused.value.message
    assert list(directory.iterdir()) == []
    written = engine.download(demo_site.url + "/media/clip1.mp4", "demotube", directory, partial, {"metadata": {}})
    assert [item.path.name for item in written] == [path.name for path in directory.iterdir()]
