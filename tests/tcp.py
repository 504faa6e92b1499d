"""What the tests' TCP proxies share: forwarding one direction, and ending both together."""

from __future__ import annotations

import socket


def pump(source: socket.socket, target: socket.socket) -> None:
    """Forward ``source`` to ``target`` until either ends, then close both."""
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        close(source, target)


def close(*sockets: socket.socket) -> None:
    """Both directions end together (closing twice is harmless)."""
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
