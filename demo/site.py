"""The demo site: a small booru (moebooru's JSON API) and video pages, on 127.0.0.1.

gallery-dl and yt-dlp talk to it exactly as to real sites: gallery-dl through a custom
moebooru instance (``extractor.moebooru.<name>.root``), yt-dlp through its generic
extractor (pages with ``<video>`` tags, and direct media files). Failure modes are
reachable by tag (see ``demo.catalog.FAILURES``); ``/_counter`` tells what was fetched.

    python -m demo.site --port 8000 [--latency 0.05] [--posts 240]
"""

from __future__ import annotations

import html
import json
import socket
import threading
import time
from collections import Counter

import click
from flask import Flask, Response, abort, jsonify, request, send_from_directory

from . import streams
from .catalog import API_FAILURES, FAILURES, GROWING_AT_START, RETRY_AFTER_SECONDS, VIDEOS, Catalog, video_bytes

PER_PAGE_MAX = 1000


def create_site(posts: int = 240, latency: float = 0.0, image_size: int | None = None) -> Flask:
    app = Flask(__name__)
    catalog = Catalog(posts, image_size)
    counts: Counter[str] = Counter()
    failures_left: dict[str, int | None] = {}
    lock = threading.Lock()
    app.extensions["demo"] = {"catalog": catalog, "counts": counts}
    try:
        streamed = streams.build()
    except (RuntimeError, OSError) as problem:  # the rest of the site works without ffmpeg
        streamed, streams_missing = None, str(problem)

    def reset_failures() -> None:
        failures_left.clear()
        for post_id, failure in FAILURES.items():
            failures_left[f"file:{post_id}"] = failure.times
        for tag, (_, times) in API_FAILURES.items():
            failures_left[f"api:{tag}"] = times
        for name, fault in streams.FAULTS.items():
            failures_left[f"stream:{name}"] = fault.times

    reset_failures()

    def should_fail(key: str) -> bool:
        """Consume one failure of ``key``: True while it has failures left (None: forever)."""
        with lock:
            if key not in failures_left:
                return False
            left = failures_left[key]
            if left is None:
                return True
            if left > 0:
                failures_left[key] = left - 1
                return True
            return False

    @app.before_request
    def count_and_delay():
        if request.path.startswith("/_"):
            return
        with lock:
            counts[request.full_path.rstrip("?")] += 1
            counts["total"] += 1
        if latency:
            time.sleep(latency)

    @app.get("/_counter")
    def counter():
        with lock:
            return jsonify({"total": counts["total"], "paths": {k: v for k, v in counts.items() if k != "total"}})

    @app.post("/_counter/reset")
    def counter_reset():
        with lock:
            counts.clear()
            catalog.grown = GROWING_AT_START
            catalog.vanished.clear()
            broken["mode"] = None
        reset_failures()
        return jsonify({"total": 0})

    broken = {"mode": None}

    @app.post("/_break")
    def break_site():
        """Make the site unhealthy for its health test: ``mode=500`` (its API answers 500),
        ``mode=wrong`` (files come with other bytes), ``mode=none`` (healthy again)."""
        mode = request.args.get("mode", "none")
        broken["mode"] = None if mode == "none" else mode
        return jsonify({"broken": broken["mode"]})

    @app.post("/_grow")
    def grow():
        """New posts appear in the ``growing`` tag (``?n=``, default 1)."""
        catalog.grown += max(0, min(int(request.args.get("n", 1)), 100))
        return jsonify({"grown": catalog.grown})

    @app.post("/_vanish")
    def vanish():
        """A post is deleted upstream (``?post=ID``; ``&back=1`` brings it back)."""
        post_id = int(request.args["post"])
        (catalog.vanished.discard if request.args.get("back") else catalog.vanished.add)(post_id)
        return jsonify({"vanished": sorted(catalog.vanished)})

    # -------------------------------------------------------------- booru (moebooru)

    @app.get("/post.json")
    def post_json():
        if broken["mode"] == "500":
            return _error(500, "Internal Server Error")
        tags = request.args.get("tags", "").split()
        for tag in tags:
            if tag in API_FAILURES and should_fail(f"api:{tag}"):
                status = API_FAILURES[tag][0]
                if status == "429":
                    return _error(429, "Too Many Requests", {"Retry-After": str(RETRY_AFTER_SECONDS)})
                return _error(500, "Internal Server Error")
        try:
            limit = max(1, min(int(request.args.get("limit", 100)), PER_PAGE_MAX))
            page = max(1, int(request.args.get("page", 1)))
        except ValueError:
            return _error(400, "limit and page must be integers")
        found = catalog.search([tag for tag in tags if tag not in API_FAILURES])
        window = found[(page - 1) * limit : page * limit]
        return jsonify([catalog.as_json(post, request.host_url.rstrip("/")) for post in window])

    @app.get("/post")
    def post_search_page():
        tags = request.args.get("tags", "")
        posts = catalog.search(tags.split())[:100]
        items = "".join(f'<li><a href="/post/show/{p.id}">post {p.id}</a></li>' for p in posts)
        return _page(f"Posts tagged {tags}", f"<ul>{items}</ul>")

    @app.get("/post/show/<int:post_id>")
    def post_page(post_id: int):
        post = catalog.post(post_id)
        if post is None:
            abort(404)
        tags = "".join(f'<li class="tag-type-general"><a href="/post?tags={t}">{t}</a></li>' for t in post.tags)
        return _page(f"Post {post_id}", f'<ul id="tag-sidebar">{tags}</ul><img src="/data/{post.file_name}">')

    @app.get("/data/<name>")
    def data(name: str):
        stem, _, ext = name.partition(".")
        post = catalog.post(int(stem)) if stem.isdigit() else None
        if post is None or post.ext != ext:
            abort(404)
        body = catalog.file_bytes(post)
        if broken["mode"] == "wrong":
            body = body[:-16] + b"\0" * 16  # same size, other bytes
        failure = FAILURES.get(post.id)
        if failure is not None and should_fail(f"file:{post.id}"):
            if failure.mode == "404":
                abort(404)
            if failure.mode == "500":
                return _error(500, "Internal Server Error")
            if failure.mode == "429":
                return _error(429, "Too Many Requests", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            if failure.mode == "slow":
                time.sleep(1.5)
            if failure.mode == "drop":
                return _dropped(body, "image/png")
        mimetype = "image/png" if post.ext == "png" else "image/jpeg"
        return Response(body, mimetype=mimetype, headers={"Content-Length": str(len(body))})

    # ------------------------------------------------------------------------ video

    @app.get("/watch/<name>")
    def watch(name: str):
        if name not in VIDEOS:
            abort(404)
        title, ext, _ = VIDEOS[name]
        return _page(title, _video_tag(name, ext))

    @app.get("/videos")
    def video_search():
        term = request.args.get("q", "")
        names = [name for name, (_, _, tags) in VIDEOS.items() if term in tags]
        return _page(f"Videos: {term}", "".join(_video_tag(name, VIDEOS[name][1]) for name in names))

    @app.get("/watch/pair")
    def watch_pair():
        """Two videos whose files share a stem: each must become its own download task."""
        body = "".join(
            f'<video controls><source src="/media/pair/clip.{ext}" type="video/{ext}"></video>' for ext in PAIR
        )
        return _page("Two clips, one name", body)

    @app.get("/watch/elsewhere")
    def watch_elsewhere():
        """One video on this site and one on an ftp: server a node must never dial."""
        body = '<video><source src="ftp://127.0.0.1:9/clip.mp4" type="video/mp4"></video>' + _video_tag("clip2", "mp4")
        return _page("A clip here, a clip elsewhere", body)

    @app.get("/media/pair/<name>")
    def media_pair(name: str):
        stem, _, ext = name.partition(".")
        if stem != "clip" or ext not in PAIR:
            abort(404)
        return Response(video_bytes(PAIR[ext]), mimetype=f"video/{ext}")

    @app.get("/media/<name>")
    def media(name: str):
        stem, _, ext = name.partition(".")
        if stem not in VIDEOS or VIDEOS[stem][1] != ext:
            abort(404)
        return Response(video_bytes(stem), mimetype=f"video/{ext}")

    # ---------------------------------------------------------- streamed video

    @app.get("/stream/<name>")
    def stream_page(name: str):
        """A video page as streaming sites make them: the player is filled by script,
        the page says what the video is (schema.org VideoObject: title, duration, the
        manifest); a page of progressive sources is a plain ``<video>``."""
        fault = streams.FAULTS.get(name)
        stream = streams.STREAMS.get(fault.base if fault else name)
        if stream is None:
            abort(404)
        if stream.kind == "sources":
            sources = "".join(
                f'<source src="/streams/{name}/{height}.mp4" type="video/mp4" res="{height}" label="{height}p">'
                for height in sorted(stream.heights, reverse=True)
            )
            return _page(stream.title, f"<video controls>{sources}</video>")
        manifest = f"{request.host_url}streams/{name}/{streams.manifest_of(stream)}"
        described = {
            "@context": "https://schema.org",
            "@type": "VideoObject",
            "name": stream.title if name == stream.name else f"{stream.title} ({name})",
            "description": f"{stream.title}, served as {stream.kind.upper()}",
            "duration": f"PT{stream.seconds}S",
            "uploadDate": "2026-01-01T00:00:00Z",
            "contentUrl": manifest,
        }
        inline = json.dumps(described).replace("<", "\\u003c")  # no "</script>" from a Host header
        script = f'<script type="application/ld+json">{inline}</script>'
        return _page(stream.title, f'{script}<div id="player" data-manifest="{html.escape(manifest)}"></div>')

    @app.get("/streams/<name>/<path:file>")
    def stream_file(name: str, file: str):
        fault = streams.FAULTS.get(name)
        base = fault.base if fault else name
        if base not in streams.STREAMS:
            abort(404)
        if streamed is None:
            return _error(503, f"streams unavailable: {streams_missing}")
        if fault and file == fault.segment and should_fail(f"stream:{name}"):
            if fault.how == "404":
                abort(404)
            if fault.how == "drop":
                return _dropped((streamed / base / file).read_bytes(), "video/mp2t")
            return _error(500, "Internal Server Error")
        return send_from_directory(streamed / base, file, max_age=0)

    return app


#: The pair page's files, by extension: the clip each one serves.
PAIR = {"mp4": "clip1", "webm": "clip4"}


def _video_tag(name: str, ext: str) -> str:
    return f'<video controls width="96" height="64"><source src="/media/{name}.{ext}" type="video/{ext}"></video>'


def _page(title: str, body: str) -> str:
    title = html.escape(title)
    return f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"success": False, "reason": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _dropped(body: bytes, mimetype: str) -> Response:
    """Announce the whole file, send half, then close the connection."""
    sock = request.environ.get("werkzeug.socket")

    def half_then_hang_up():
        yield body[: len(body) // 2]
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    return Response(half_then_hang_up(), mimetype=mimetype, headers={"Content-Length": str(len(body))})


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--posts", type=click.IntRange(1, 100_000), default=240, show_default=True)
@click.option("--latency", type=click.FloatRange(0, 10), default=0.0, help="Seconds added to every request.")
@click.option("--image-size", type=click.IntRange(16, 4096), help="Every image this many pixels square.")
def main(host: str, port: int, posts: int, latency: float, image_size: int | None) -> None:
    """Serve the demo site (threaded) until interrupted."""
    from werkzeug.serving import make_server

    server = make_server(host, port, create_site(posts, latency, image_size), threaded=True)
    click.echo(f"demo site on http://{host}:{port} ({posts} posts)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
