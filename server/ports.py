"""Loopback TCP ports: the one way every aptfleet process picks a port to listen on."""

from __future__ import annotations

import socket


def free_port(preferred: int | None = None) -> int:
    """A TCP port that is free on 127.0.0.1 right now.

    Parameters
    ----------
    preferred : int | None (default: None)
        Port to return when it is free; any free port otherwise.

    Returns
    -------
    int
        The port. Another process may take it before the caller binds it; callers start
        their server right away.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if preferred is not None:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
