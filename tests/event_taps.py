"""What the event tests listen and cut with: a queue bound to the coordinator's exchange on
the real RabbitMQ, a webhook receiver that checks signatures (and fails its first calls
on request), and a TCP gate in front of the broker that can be shut (connections dropped,
new ones refused) and opened again."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pika

from tests.tcp import close, pump


class AmqpTap:
    """An exclusive queue bound to every routing key of ``exchange``."""

    def __init__(self, url: str, exchange: str):
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, exchange, routing_key="#")
        self.messages: list[dict[str, Any]] = []

    def collect(self, idle: float = 1.0, timeout: float = 60) -> list[dict[str, Any]]:
        """Read until nothing arrives for ``idle`` seconds; every message so far."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.05)
                continue
            quiet_since = time.monotonic()
            message = json.loads(body)
            assert method.routing_key == message["type"]
            assert properties.message_id == str(message["id"]) and properties.delivery_mode == 2
            self.messages.append(message)
        return self.messages

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class WebhookReceiver:
    """An HTTP endpoint that checks each POST's HMAC-SHA256 signature and answers 500 to
    its first ``fail_first`` calls."""

    def __init__(self, secret: str, fail_first: int = 0):
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.calls = 0
        self.bad_signatures = 0
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                with receiver._lock:
                    receiver.calls += 1
                    failing = receiver.calls <= receiver.fail_first
                    signed = hmac.compare_digest(expected, self.headers.get("X-Fetchfleet-Signature-256", ""))
                    if not signed:
                        receiver.bad_signatures += 1
                    elif not failing:
                        receiver.received.append(json.loads(body))
                self.send_response(500 if failing or not signed else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=hidden"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpGate:
    """A TCP proxy on a fixed loopback port: ``shut`` drops every connection and refuses
    new ones, ``open`` takes them again on the same port."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def shut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone leaves it listening)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        close(*sockets)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):  # forward each small AMQP frame at once (no Nagle delay)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, target), daemon=True).start()
