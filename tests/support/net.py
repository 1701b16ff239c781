"""Ports on 127.0.0.1 for servers a test starts: one helper for every kind of server."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def bound_socket(host: str = HOST) -> socket.socket:
    """A TCP socket bound to a free port, to hand to a server in this process (uvicorn's
    ``sockets=``): no other process can take the port in between."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def free_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct ports free right now, for servers in other processes (bound together,
    then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = HOST) -> int:
    """One port free right now, for a server in another process."""
    return free_ports(1, host)[0]
