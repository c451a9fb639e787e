"""Is the server's Exim answering? A plain TCP connect that reads the SMTP greeting, nothing more."""

from __future__ import annotations

import socket

SMTP_PORTS = (25, 587)


def smtp_banner(host: str, ports: tuple[int, ...] = SMTP_PORTS, timeout: float = 5.0) -> int | None:
    """The greeting code of the first port that answers (220 when Exim is up), else None.

    Many networks block outbound 25, so 587 is tried as well: the same daemon greets on both.
    """
    for port in ports:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                line = sock.makefile("rb").readline(512)
                sock.sendall(b"QUIT\r\n")
        except OSError:
            continue
        head = line[:3]
        if head.isdigit():
            return int(head)
    return None
