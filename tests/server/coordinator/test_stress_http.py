"""Slow and stalled clients against a real ``aptfleet serve`` on loopback (bounded).

Stalled connections come from other loopback addresses (127.0.0.2, 127.0.0.3) than the
probes (127.0.0.1), as an attacker's would from another host. Every socket is closed at
the end of its test and every test has a time-out.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.utils.service import Coordinator
from tests.utils.token import service_token

#: Stalled connections held open at once: heads cut short, bodies cut short, silent.
STALLED_BODIES = 100
STALLED_HEADS = 50
SILENT = 50
#: Seconds within which /healthz and an authenticated read must answer meanwhile.
ANSWER_WITHIN_S = 5.0

_POST_HEAD = (
    b"POST /api/v1/runs HTTP/1.1\r\nHost: coordinator\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
)


def _connect(coordinator: Coordinator, source: str, stack: ExitStack) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", coordinator.port), timeout=10, source_address=(source, 0)
    )
    stack.callback(sock.close)
    return sock


def _stalled_body(coordinator: Coordinator, source: str, stack: ExitStack) -> socket.socket:
    """The head of a POST and one byte of its 1000-byte body, then nothing."""
    sock = _connect(coordinator, source, stack)
    sock.sendall(_POST_HEAD + b"{")
    return sock


def _stalled_head(coordinator: Coordinator, source: str, stack: ExitStack) -> socket.socket:
    sock = _connect(coordinator, source, stack)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: coord")
    return sock


def _timed(call: httpx.Client, path: str) -> tuple[int, float]:
    start = time.monotonic()
    status = call.get(path).status_code
    return status, time.monotonic() - start


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture()
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    c = Coordinator(tmp_path)
    yield c
    c.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_serve_stalled_clients_health_and_read_answer(coordinator: Coordinator) -> None:
    # Prepare: time-outs far longer than the test, so every stalled connection stays open
    coordinator.env.update(APTFLEET_HEADER_TIMEOUT="120", APTFLEET_BODY_TIMEOUT="120")
    coordinator.start()
    token = service_token(coordinator, role="operator")

    with ExitStack() as stack:
        # Execute: 200 stalled connections, then probes while they are all still open
        for _ in range(STALLED_BODIES):
            _stalled_body(coordinator, "127.0.0.2", stack)
        for _ in range(STALLED_HEADS):
            _stalled_head(coordinator, "127.0.0.2", stack)
        silent = [_connect(coordinator, "127.0.0.3", stack) for _ in range(SILENT)]
        time.sleep(1.0)  # the server has read every head and first body byte
        with (
            httpx.Client(base_url=coordinator.base, timeout=ANSWER_WITHIN_S) as anonymous,
            coordinator.client(token, timeout=ANSWER_WITHIN_S) as api,
        ):
            probes = [(_timed(anonymous, "/healthz"), _timed(api, "/runs")) for _ in range(5)]
            post = api.post("/runs", json={"task": "digits", "method": "apt", "rounds": 0})
        silent_open = sum(1 for sock in silent if sock.fileno() != -1)

    # Assert
    assert [(health[0], read[0]) for health, read in probes] == [(200, 200)] * 5
    assert max(t for pair in probes for _, t in pair) < ANSWER_WITHIN_S
    assert post.status_code == 422  # a complete body is admitted and validated
    assert silent_open == SILENT


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_slow_clients_timed_out_and_capped_per_address(coordinator: Coordinator) -> None:
    # Prepare
    coordinator.env.update(
        APTFLEET_HEADER_TIMEOUT="1", APTFLEET_BODY_TIMEOUT="1", APTFLEET_MAX_REQUESTS_PER_CLIENT="5"
    )
    coordinator.start()

    with ExitStack() as stack:
        # Execute: a cut-short head, a cut-short body, one request over the address's cap
        head = _stalled_head(coordinator, "127.0.0.2", stack)
        body = _stalled_body(coordinator, "127.0.0.2", stack)
        capped = [_stalled_body(coordinator, "127.0.0.3", stack) for _ in range(5)]
        time.sleep(0.3)
        over = _stalled_body(coordinator, "127.0.0.3", stack)
        over_answer = _read_all(over)
        start = time.monotonic()
        head_answer, body_answer = _read_all(head), _read_all(body)
        closed_after_s = time.monotonic() - start
        health = httpx.get(f"{coordinator.base}/healthz", timeout=5).status_code
        capped_answers = [_read_all(sock) for sock in capped]

    # Assert
    assert over_answer.startswith(b"HTTP/1.1 429 ")
    assert b"APTFLEET_MAX_REQUESTS_PER_CLIENT" in over_answer
    assert head_answer == b""  # closed without a word: there was no request to answer
    assert body_answer.startswith(b"HTTP/1.1 408 ")
    assert b"APTFLEET_BODY_TIMEOUT" in body_answer
    assert closed_after_s < 5
    assert health == 200
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in capped_answers)
