"""A TCP proxy on loopback that flips one byte in the body of the next N PUT requests it
forwards: an object corrupted in flight, between a node and the file store.

It reads each request's head to find its body (Content-Length; S3 clients send no
chunked bodies here), so keep-alive connections and ``Expect: 100-continue`` work.
"""

from __future__ import annotations

import socket
import threading

from tests.tcp import close, pump


class CorruptingProxy:
    def __init__(self, target_port: int, corrupt: int = 0):
        self.target_port = target_port
        self._lock = threading.Lock()
        self.to_corrupt = corrupt
        self.corrupted: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, count: int) -> None:
        with self._lock:
            self.to_corrupt = count

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    def _should_corrupt(self, head: bytes) -> bool:
        with self._lock:
            if head.startswith(b"PUT ") and self.to_corrupt > 0:
                self.to_corrupt -= 1
                self.corrupted.append(head.split(b" ", 2)[1].decode(errors="replace"))
                return True
        return False

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to store, one request at a time: head, then its body (perhaps flipped)."""
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                head += b"\r\n\r\n"
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                upstream.sendall(head)
                flip = length > 0 and self._should_corrupt(head)
                while length > 0:
                    if not buffer:
                        buffer = client.recv(65536)
                        if not buffer:
                            return
                    part, buffer = buffer[:length], buffer[length:]
                    if flip:
                        part = bytes([part[0] ^ 0x01]) + part[1:]
                        flip = False
                    upstream.sendall(part)
                    length -= len(part)
        except OSError:
            return
        finally:
            close(client, upstream)
