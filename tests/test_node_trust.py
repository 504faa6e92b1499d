"""A node obeys no dangerous order: a coordinator (here a fake one, saying whatever the test
wants) hands a real node leases with hostile engine options, URLs and site names. The
node refuses each one with a permanent failure naming the reason, runs no command,
writes nothing outside --dest and reads no local file; legitimate options still work.

The payloads are those of the engines' own option reference (gallery-dl 1.32, yt-dlp
2026.10): exec and python post-processors, ``\\f`` templates (eval), filters, a
user-agent that launches a program, base and part directories, archives, cookie files,
proxies, file URLs, external downloaders, print-to-file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.engine_options import Refused, vet_site
from support.processes import REPO_ROOT, demo_sites
from tests.fake_coordinator import FakeCoordinator


def with_instance(options: dict, root: str) -> dict:
    """The payload beside the honest declaration of the demo instance, so that only the
    dangerous part can be the reason for a refusal."""
    merged = json.loads(json.dumps(options))
    merged.setdefault("extractor", {}).setdefault("moebooru", {}).setdefault("demo", {}).setdefault("root", root)
    return merged


def gallery_dl_payloads(marker: Path, port: int) -> dict[str, dict]:
    m = str(marker)
    root = f"http://127.0.0.1:{port}"

    def system(name: str) -> str:
        return f"__import__('os').system('touch {m}/{name}')"

    payloads = {
        "exec-pp": {"extractor": {"postprocessors": [{"name": "exec", "command": f"touch {m}/g1"}]}},
        "exec-pp-root": {"postprocessors": [{"name": "exec", "command": ["touch", f"{m}/g2"]}]},
        "python-pp": {
            "extractor": {
                "postprocessors": [{"name": "python", "expression": f"__import__('os').system('touch {m}/g3')"}]
            }
        },
        "actions": {"extractor": {"actions": {"*": f"exec touch {m}/g4"}}},
        "eval-filename": {
            "extractor": {"demo": {"filename": f"\fE __import__('os').system('touch {m}/g5') or 'x.png'"}}
        },
        "image-filter": {"extractor": {"demo": {"image-filter": f"__import__('os').system('touch {m}/g6') or True"}}},
        "directory-dict": {
            "extractor": {"demo": {"directory": {f"__import__('os').system('touch {m}/g7')==0": ["x"]}}}
        },
        "archive-format": {
            "extractor": {
                "demo": {
                    "archive": f"{m}/g8.db",
                    "archive-format": f"\fE {system('g8')} or 'k'",
                }
            }
        },
        "user-agent-program": {"extractor": {"demo": {"user-agent": f"@{m}/prog.sh"}}},
        "base-directory-root": {"base-directory": f"{m}/g11"},
        "base-directory": {"extractor": {"demo": {"base-directory": f"{m}/g12"}}},
        "directory-up": {"extractor": {"demo": {"directory": ["..", "g13"]}}},
        "filename-up": {"extractor": {"demo": {"path-restrict": "\u0000", "filename": "../../g15.png"}}},
        "archive-root": {"archive": f"{m}/g16.db"},
        "metadata-pp": {"extractor": {"postprocessors": [{"name": "metadata", "directory": f"{m}/g17"}]}},
        "cookies-update": {"extractor": {"demo": {"cookies": {"a": "b"}, "cookies-update": f"{m}/g18.txt"}}},
        "part-directory": {"downloader": {"part-directory": f"{m}/g19"}},
        "proxy": {"proxy": "http://127.0.0.1:9"},
        "env-in-filename": {"extractor": {"demo": {"filename": "{_env[HOME]}_{id}.{extension}"}}},
        "cache-file": {"cache": {"file": f"{m}/g22.db"}},
        "netrc-and-endless-retries": {"extractor": {"demo": {"netrc": True, "retries": -1}}},
        "ytdl-module": {"extractor": {"ytdl": {"module": f"{m}/evil.py"}}},
        "category-collision": {"extractor": {"moebooru": {"pixiv": {"root": f"http://127.0.0.1:{port}"}}}},
        "url-hijack-pattern": {
            "extractor": {"moebooru": {"demo": {"root": f"http://127.0.0.1:{port}", "pattern": ".*"}}}
        },
        "root-with-credentials": {"extractor": {"moebooru": {"demo": {"root": f"http://user:pw@127.0.0.1:{port}"}}}},
        "root-not-http": {"extractor": {"moebooru": {"demo": {"root": "file:///etc"}}}},
    }
    return {name: with_instance(options, root) for name, options in payloads.items()}


def yt_dlp_payloads(marker: Path) -> dict[str, dict]:
    m = str(marker)
    return {
        "exec-pp": {"postprocessors": [{"key": "Exec", "exec_cmd": [f"touch {m}/y1"], "when": "after_move"}]},
        "external-downloader": {"external_downloader": {"default": f"{m}/bin/curl"}},
        "ffmpeg-location": {"ffmpeg_location": f"{m}/bin", "postprocessors": [{"key": "FFmpegMetadata"}]},
        "print-to-file": {"print_to_file": {"video": [["%(id)s", f"{m}/y4.txt"]]}},
        "download-archive": {"download_archive": f"{m}/y5.txt"},
        "cookiefile": {"cookiefile": f"{m}/y6.txt"},
        "file-urls": {"enable_file_urls": True},
        "proxy": {"proxy": "http://127.0.0.1:9"},
        "netrc-cmd": {"usenetrc": True, "netrc_cmd": f"touch {m}/y9; true"},
        "outtmpl": {"outtmpl": {"default": f"{m}/y10/%(id)s.%(ext)s"}},
        "paths": {"paths": {"home": m}},
        "cachedir": {"cachedir": f"{m}/y11"},
        "match-filter-string": {"match_filter": "duration > 1"},
        "match-filter-interactive": {"match_filter": ["-"]},
        "unsafe-compat": {"compat_opts": ["allow-unsafe-exec-expansion"]},
        "endless-retries": {"retries": 1000000},
    }


LEGITIMATE = {
    "gallery-dl instance root and sleep": (
        "gallery-dl",
        {"extractor": {"moebooru": {"demo": {"root": "http://127.0.0.1:1"}}, "demo": {"sleep-request": [0, 0.1]}}},
    ),
    "gallery-dl plain filename": (
        "gallery-dl",
        {
            "extractor": {
                "moebooru": {"demo": {"root": "http://x.test"}},
                "demo": {"filename": "{id}_{md5:.8}.{extension}"},
            }
        },
    ),
    "gallery-dl options of a built-in category": ("gallery-dl", {"extractor": {"danbooru": {"videos": False}}}),
    "yt-dlp format and retries": ("yt-dlp", {"format": "bestvideo[height<=720]+bestaudio/best", "retries": 3}),
    "yt-dlp match filter": ("yt-dlp", {"match_filter": ["duration < 3600"], "merge_output_format": "mkv"}),
}


@pytest.mark.parametrize("name", sorted(gallery_dl_payloads(Path("/m"), 1)))
def test_every_dangerous_gallery_dl_option_is_refused(name):
    options = gallery_dl_payloads(Path("/m"), 1)[name]
    with pytest.raises(Refused) as refusal:
        vet_site("demo", {"engine": "gallery-dl", "options": options})
    # Refused for the payload, never for the honest instance declaration beside it.
    assert str(refusal.value).startswith("options.")
    assert name.startswith("root-") or "moebooru.demo.root:" not in str(refusal.value), refusal.value


@pytest.mark.parametrize("name", sorted(yt_dlp_payloads(Path("/m"))))
def test_every_dangerous_yt_dlp_option_is_refused(name):
    with pytest.raises(Refused) as refusal:
        vet_site("demotube", {"engine": "yt-dlp", "options": yt_dlp_payloads(Path("/m"))[name]})
    assert str(refusal.value).startswith("options."), refusal.value


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_what_a_site_legitimately_needs_passes(name):
    engine, options = LEGITIMATE[name]
    assert vet_site("demo", {"engine": engine, "options": options}) == {"engine": engine, "options": options}


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", ".hidden", "", "A", "x" * 64, 7])
def test_site_names_that_are_not_plain_folder_names_are_refused(name):
    with pytest.raises(Refused, match="site name"):
        vet_site(name, {"engine": "gallery-dl", "options": {}})


# ------------------------------------------------------------------ a real node


def run_node(coordinator: FakeCoordinator, dest: Path, tmp_path: Path, *, timeout: float = 180):
    env = {name: value for name, value in os.environ.items() if not name.startswith("FETCHFLEET_")}
    config = tmp_path / "node_config.py"
    config.write_text("GALLERY_DL_CONFIG = ''\n")
    env.update(FETCHFLEET_CONFIG=str(config), HOME=str(tmp_path / "home"))
    command = [sys.executable, "-m", "client", "--server", coordinator.url, "--key", "k", "-v"]
    command += ["download", "any", "10", "--drain", "--dest", str(dest), "--no-progress"]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def everything_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.e2e
def test_a_real_node_refuses_hostile_leases_and_still_does_honest_work(demo_site, tmp_path):
    marker = tmp_path / "marker"
    (marker / "bin").mkdir(parents=True)
    for program in ("prog.sh", "bin/curl", "bin/ffmpeg", "bin/node"):
        script = marker / program
        script.write_text(f"#!/bin/sh\ntouch {marker}/ran-{script.name}\n")
        script.chmod(0o755)
    (marker / "evil.py").write_text(f"open({str(marker / 'imported')!r}, 'w').close()\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("the node's private file")
    dest = tmp_path / "dest"
    port = int(demo_site.url.rsplit(":", 1)[1])
    honest = demo_sites(demo_site.url)
    post, video = demo_site.url + "/post/show/1", demo_site.url + "/watch/clip1"

    leases, expected = [], {}
    task_ids = iter(range(1, 10_000))

    def offer(site: str, info: dict, url: str, why: str) -> None:
        task_id = next(task_ids)
        leases.append({"sites": {site: info}, "tasks": [{"id": task_id, "site": site, "url": url}]})
        expected[task_id] = why

    for name, options in gallery_dl_payloads(marker, port).items():
        offer("demo", {"engine": "gallery-dl", "options": options}, post, f"gallery-dl {name}")
    for name, options in yt_dlp_payloads(marker).items():
        offer("demotube", {"engine": "yt-dlp", "options": options}, video, f"yt-dlp {name}")
    offer("demotube", honest["demotube"], f"file://{secret}", "file URL")
    offer("demotube", honest["demotube"], "ftp://127.0.0.1:9/x.mp4", "ftp URL")
    offer("demo", honest["demo"], f"ytdl:file://{secret}", "ytdl: URL")
    offer("../../escape", {"engine": "gallery-dl", "options": {}}, post, "site name")
    honest_ids = [next(task_ids), next(task_ids)]
    leases.append(
        {
            "sites": {"demo": honest["demo"], "demotube": {**honest["demotube"], "options": {"format": "best"}}},
            "tasks": [
                {"id": honest_ids[0], "site": "demo", "url": post},
                {"id": honest_ids[1], "site": "demotube", "url": video},
            ],
        }
    )

    with FakeCoordinator(leases=leases, sites={}) as coordinator:
        run = run_node(coordinator, dest, tmp_path)

    output = run.stdout + run.stderr
    assert run.returncode == 1, output  # some tasks failed (the refused ones)
    for task_id, why in expected.items():
        result = coordinator.results.get(task_id)
        assert result is not None, f"{why}: no result\n{output[-3000:]}"
        assert result["status"] == "failed" and result["error_class"] == "permanent", (why, result)
        assert result["error"].startswith("refused by this node"), (why, result)
    assert "refusing site 'demo' from the coordinator" in run.stderr  # and the node's log says so
    for task_id in honest_ids:
        assert coordinator.results[task_id]["status"] == "done", coordinator.results[task_id]

    assert sorted(everything_under(marker)) == ["bin", "bin/curl", "bin/ffmpeg", "bin/node", "evil.py", "prog.sh"]
    written = everything_under(dest)
    assert not any(path.startswith(("..", "/")) for path in written)
    assert not any(".part" in path or "secret" in path for path in written), written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["marker", "secret.txt", "dest", "node_config.py"])
    files = [
        path
        for path in written
        if (dest / path).is_file() and not path.startswith(".fetchfleet") and not path.endswith(".json")
    ]
    assert sorted(Path(path).parent.as_posix() for path in files) == ["demo", "demotube"], files
    recorded = {record["path"] for task_id in honest_ids for record in coordinator.results[task_id]["files"]}
    assert recorded == set(files)
    assert json.loads((dest / f"{files[0]}.json").read_text())["fetchfleet"]["task_id"] in honest_ids


# ------------------------------------------------- paths, checked before writing


class _PathFormat:
    """What gallery-dl's PathFormat offers the node's path hook."""

    def __init__(self, directory: Path, filename: str, temppath: str = ""):
        self.realdirectory = str(directory) + "/"
        self.kwdict = {"name": filename}
        self.extension = "png"
        self.filename = filename
        self.temppath = temppath

    def build_filename(self, kwdict):
        return kwdict["name"]


@pytest.mark.parametrize("filename", ["..", ".", "", "a/../../b.png"])
def test_gallery_dl_jobs_stop_before_a_file_name_leaves_the_folder(tmp_path, filename):
    from client.engines.gallery_dl import _Collector, _PathRefused

    (tmp_path / "dest" / "demo").mkdir(parents=True)
    collector = _Collector(confined_to=(tmp_path / "dest" / "demo",))
    with pytest.raises(_PathRefused):
        collector.check_path(_PathFormat(tmp_path / "dest" / "demo", filename))
    assert collector.refused.startswith("refused by this node: the job would write")


def test_gallery_dl_jobs_stop_before_a_part_file_or_symlinked_folder_leaves_dest(tmp_path):
    from client.engines.gallery_dl import _Collector, _PathRefused

    inside = tmp_path / "dest" / "demo"
    inside.mkdir(parents=True)
    (inside / "link").symlink_to(tmp_path)
    collector = _Collector(confined_to=(inside,))
    collector.check_path(_PathFormat(inside, "1.png", str(inside / "1.png.part")))  # fine
    with pytest.raises(_PathRefused):
        collector.check_path(_PathFormat(inside, "1.png", str(tmp_path / "1.png.part")))
    with pytest.raises(_PathRefused):
        collector.check_path(_PathFormat(inside / "link", "1.png"))


def test_yt_dlp_jobs_stop_before_a_file_name_leaves_the_folder(tmp_path):
    from yt_dlp.utils import DownloadError

    from client.engines.yt_dlp import _ConfinedYoutubeDL

    home, temp = tmp_path / "home", tmp_path / "temp"
    options = {"quiet": True, "outtmpl": {"default": "%(id)s.%(ext)s"}, "paths": {"home": str(home), "temp": str(temp)}}
    info = {"id": "clip", "ext": "mp4", "title": "t"}
    with _ConfinedYoutubeDL(options, confined_to=(home, temp)) as ydl:
        assert ydl.prepare_filename(info) == str(home / "clip.mp4")
        with pytest.raises(DownloadError):
            ydl.prepare_filename(info, outtmpl=str(tmp_path / "elsewhere" / "%(id)s.%(ext)s"))
        assert ydl.refused.startswith("refused by this node: the job would write")
