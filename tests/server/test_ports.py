"""Tests of server/ports.py."""

from __future__ import annotations

import socket

from server.ports import free_port


def test_free_port_can_be_bound() -> None:
    # Execute
    port = free_port()

    # Assert
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_free_port_returns_preferred_when_free() -> None:
    # Prepare
    port = free_port()

    # Execute / Assert
    assert free_port(port) == port


def test_free_port_avoids_preferred_when_taken() -> None:
    # Prepare
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # Execute
        other = free_port(port)

    # Assert
    assert other != port
