"""Ports from the OS for local clusters, benchmarks and tests.

Owns nothing but the question "which ports are free right now"; it never binds
a port for longer than the asking.
"""

from __future__ import annotations

import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free for both TCP and UDP when asked (a
    member's peer port serves either transport). All are held until all are
    found, so they are distinct, then released for the child to bind: there is
    a small window in which someone else may take one."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < n:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((host, port))
            except OSError:
                tcp.close()
                udp.close()
                continue
            held += [tcp, udp]
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports
