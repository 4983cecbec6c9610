"""Stalled clients: raw sockets that send part of a request and then trickle or stall.

Half of the slots send a request head without its blank line (then one more header byte
every ``TRICKLE_S`` seconds, slowloris style, so an idle time-out alone would never fire);
the other half send a complete ``POST /api/v1/runs`` head announcing a body and then one
body byte every ``TRICKLE_S`` seconds. Every slot reconnects ``RECONNECT_S`` after the
server closed it, so about ``n`` stalled connections stay open for the whole scenario.
They connect from a loopback address of their own (default 127.0.0.2), as an attacker
would from another host, so the coordinator's per-address limit applies to them and not
to the legitimate clients on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

TRICKLE_S = 2.0
RECONNECT_S = 1.0
CONNECT_TIMEOUT_S = 5.0
#: The announced body: far more than is ever sent.
BODY_BYTES = 100_000


@dataclass
class Closed:
    """One stalled connection the server ended: which kind, when, after how long, how."""

    kind: str
    at_s: float
    held_s: float
    outcome: str


@dataclass
class StallReport:
    """What the stalled slots saw; ``open_per_s[i]`` counts the sockets open at second i."""

    slots: dict[str, int]
    source: str
    connects: int = 0
    connect_errors: int = 0
    closed: list[Closed] = field(default_factory=list)
    open_per_s: list[int] = field(default_factory=list)
    open_now: int = 0
    still_open_at_end: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts per kind and outcome, and the held times of the server's closes."""
        out: dict[str, Any] = {
            "slots": self.slots,
            "source": self.source,
            "connects": self.connects,
            "connect_errors": self.connect_errors,
            "still_open_at_end": self.still_open_at_end,
            "open_min_during": min(self.open_per_s[3:] or [0]),
            "open_max_during": max(self.open_per_s or [0]),
            "closed_by_server": {},
        }
        for kind in self.slots:
            mine = [c for c in self.closed if c.kind == kind]
            outcomes = sorted({c.outcome for c in mine})
            out["closed_by_server"][kind] = {
                o: {
                    "count": sum(1 for c in mine if c.outcome == o),
                    "held_s_min": round(min(c.held_s for c in mine if c.outcome == o), 2),
                    "held_s_max": round(max(c.held_s for c in mine if c.outcome == o), 2),
                }
                for o in outcomes
            }
        return out


def _head(kind: str, port: int) -> bytes:
    """The bytes a slot of ``kind`` sends first."""
    if kind == "partial_head":
        return (
            f"GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: stalled\r\nX-Pad: "
        ).encode()
    return (
        f"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n\r\n{{"
    ).encode()


def _outcome(data: bytes) -> str:
    """How the server ended the connection: its status code, or a bare close."""
    if data.startswith(b"HTTP/1.1 "):
        return data[9:12].decode(errors="replace")
    return "closed without response" if not data else "other bytes"


async def _hold(
    kind: str, port: int, source: str, report: StallReport, t0: float, stop: asyncio.Event
) -> None:
    """One slot: connect, send part of a request, trickle, note how it ends; repeat."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            report.connect_errors += 1
            await _pause(stop, RECONNECT_S)
            continue
        report.connects += 1
        report.open_now += 1
        opened = time.monotonic()
        try:
            writer.write(_head(kind, port))
            data = await _trickle(reader, writer, stop)
        finally:
            report.open_now -= 1
            writer.close()
        if data is not None:  # the server ended it (not our stop)
            now = time.monotonic()
            report.closed.append(Closed(kind, now - t0, now - opened, _outcome(data)))
            await _pause(stop, RECONNECT_S)


async def _trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
) -> bytes | None:
    """Send one byte every ``TRICKLE_S`` until the server answers or closes, or ``stop`` is set.

    Returns the server's bytes (b"" for a bare close), or None when ``stop`` was set.
    """
    while not stop.is_set():
        try:
            data = await asyncio.wait_for(reader.read(4096), TRICKLE_S)
            return data
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            return b""
        try:
            writer.write(b"a")
            await writer.drain()
        except (ConnectionError, OSError):
            return b""
    return None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _count_open(report: StallReport, stop: asyncio.Event) -> None:
    while not stop.is_set():
        report.open_per_s.append(report.open_now)
        await _pause(stop, 1.0)


async def hold_stalled(
    port: int, n: int, duration: float, source: str = "127.0.0.2"
) -> StallReport:
    """Hold about ``n`` stalled connections to 127.0.0.1:``port`` for ``duration`` seconds.

    Parameters
    ----------
    port : int
        The coordinator's port on 127.0.0.1.
    n : int
        Slots: ``n // 2`` partial heads, the rest partial bodies.
    duration : float
        Seconds to hold them; then every socket is closed and the report returned.
    source : str
        Loopback address the sockets connect from.

    Returns
    -------
    StallReport
        Connects, closes by the server (kind, time, outcome) and open sockets per second.
    """
    slots = {"partial_head": n // 2, "partial_body": n - n // 2}
    report = StallReport(slots=slots, source=source)
    stop = asyncio.Event()
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(_hold(kind, port, source, report, t0, stop))
        for kind, count in slots.items()
        for _ in range(count)
    ]
    counter = asyncio.create_task(_count_open(report, stop))
    await asyncio.sleep(duration)
    report.still_open_at_end = report.open_now
    stop.set()
    await asyncio.wait([*tasks, counter], timeout=TRICKLE_S + CONNECT_TIMEOUT_S + 5)
    return report
