"""Fleet pages: every device with filters and key pages; one device's rounds and rejections."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from server.coordinator.core.pagination import Page
from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.heatmap import HeatCell, heatmap
from server.coordinator.dashboard.layout import empty, page, section, table
from server.coordinator.dashboard.line_chart import Series, line_chart
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.quantities import axis_label
from server.coordinator.dashboard.units import format_bytes, format_energy, format_time
from server.coordinator.tables import ClientRound, Device


@dataclass(frozen=True)
class DeviceRow:
    """One line of the devices table."""

    device: Device
    runs: int
    bits: Mapping[str, int]
    class_cap: str
    cap_sent: int | None


@dataclass(frozen=True)
class FleetFilters:
    """The devices page's filters and page cursor."""

    device_class: str | None = None
    status: str | None = None
    cursor: str | None = None
    classes: Sequence[str] = field(default_factory=tuple)


def _online(device: Device) -> Markup:
    online = device.status != "offline"
    return fmt(
        '<span class="badge {cls}">{label}</span> <span class="muted">{status}</span>',
        cls="online" if online else "offline",
        label="online" if online else "offline",
        status="" if device.status in ("active", "offline") else f"last reply {device.status}",
    )


def _bits_text(bits: Mapping[str, int]) -> str:
    return ", ".join(f"{layer} {b}" for layer, b in bits.items()) or "—"


def _device_rows(rows: Sequence[DeviceRow]) -> list[Markup]:
    return [
        fmt(
            '<tr class="device-row" data-device="{id}"><td><a href="/devices/{id}">#{id}</a></td>'
            "<td>{node}</td><td>{cls}</td><td>{online}</td><td>{seen}</td>"
            '<td class="num">{runs}</td><td class="wrap">{bits}</td><td>{cap}</td>'
            '<td class="num">{sent}</td></tr>',
            id=r.device.id,
            node=r.device.node_id,
            cls=r.device.device_class,
            online=_online(r.device),
            seen=format_time(r.device.last_seen),
            runs=r.runs,
            bits=_bits_text(r.bits),
            cap=r.class_cap,
            sent="—" if r.cap_sent is None else r.cap_sent,
        )
        for r in rows
    ]


def _filters(filters: FleetFilters) -> Markup:
    classes = join(
        fmt(
            '<option value="{c}"{s}>{label}</option>',
            c=c,
            label=c or "every class",
            s=Markup(" selected") if c == (filters.device_class or "") else "",
        )
        for c in ("", *filters.classes)
    )
    statuses = join(
        fmt(
            '<option value="{c}"{s}>{label}</option>',
            c=c,
            label=c or "any status",
            s=Markup(" selected") if c == (filters.status or "") else "",
        )
        for c in ("", "online", "offline")
    )
    return fmt(
        '<form method="get" action="/devices" id="fleet-filters" class="filters">'
        '<label for="class">Class</label><select id="class" name="class">{classes}</select>'
        '<label for="status">Status</label><select id="status" name="status">{statuses}</select>'
        '<button type="submit" id="fleet-filter-submit">Filter</button></form>',
        classes=classes,
        statuses=statuses,
    )


def devices_page(
    *,
    viewer: Viewer,
    rows: Sequence[DeviceRow],
    count: int,
    next_cursor: str | None,
    filters: FleetFilters,
) -> Markup:
    """The devices table (one key page), its filters and the link to the next page."""
    headers = [
        ("Device", ""),
        ("Flower node", ""),
        ("Class", ""),
        ("Status", ""),
        ("Last seen", ""),
        ("Runs", "num"),
        ("Current bits per layer", ""),
        ("Class bit range / budget", ""),
        ("Cap sent last", "num"),
    ]
    shown = (
        table(headers, _device_rows(rows), table_id="devices")
        if rows
        else empty(
            "No device matches (devices appear after their first round).",
            element_id="devices-empty",
        )
    )
    more = Markup("")
    if next_cursor:
        query = {
            k: v
            for k, v in (
                ("class", filters.device_class),
                ("status", filters.status),
                ("cursor", next_cursor),
            )
            if v
        }
        more = fmt(
            '<p><a id="devices-next" href="/devices?{q}">Next {n} devices</a></p>',
            q=urlencode(query),
            n=len(rows),
        )
    body = fmt(
        '{filters}<p class="muted" id="devices-count">{count} device(s) match; '
        "showing {n}.</p>{table}{more}",
        filters=_filters(filters),
        count=count,
        n=len(rows),
        table=shown,
        more=more,
    )
    devices = section("Devices", body, section_id="devices-section")
    return page(title="Fleet", body=join([Markup("<h1>Fleet</h1>"), devices]), viewer=viewer)


def _heatmaps(bits: Sequence[Mapping[str, Any]]) -> Markup:
    by_run: dict[int, list[Mapping[str, Any]]] = {}
    for row in bits:
        by_run.setdefault(row["run_id"], []).append(row)
    maps = []
    for run_id, rows in sorted(by_run.items(), reverse=True):
        layers = list(dict.fromkeys(r["layer"] for r in rows))
        cells = {
            (r["layer"], r["round"]): HeatCell(
                float(r["bits"]), f"{r['layer']}, round {r['round']}: {r['bits']} bits"
            )
            for r in rows
        }
        chart = heatmap(
            chart_id=f"device-bits-run-{run_id}",
            title=f"Bits per layer and round in run {run_id} (measured)",
            layers=layers,
            rounds=sorted({r["round"] for r in rows}),
            cells=cells,
        )
        maps.append(
            fmt('<h3>Run <a href="/runs/{id}">#{id}</a></h3>{chart}', id=run_id, chart=chart)
        )
    if not maps:
        return empty("This device reported no per-layer bits.", element_id="device-bits-empty")
    return join(maps)


def _per_round_charts(rounds: Sequence[ClientRound]) -> Markup:
    runs = sorted({r.run_id for r in rounds}, reverse=True)[:3]
    colours = ("#1d4ed8", "#b45309", "#047857")

    def series(column: str) -> list[Series]:
        return [
            Series(
                f"run-{run}",
                f"run #{run}",
                [(r.round, float(getattr(r, column))) for r in rounds if r.run_id == run],
                colours[i],
            )
            for i, run in enumerate(runs)
        ]

    energy = line_chart(
        chart_id="device-energy",
        title="Modelled energy per round",
        series=series("energy_j"),
        y_label=axis_label("energy"),
        y_format=format_energy,
    )
    uplink = line_chart(
        chart_id="device-uplink",
        title="Uplink bytes per round (measured)",
        series=series("uplink_bytes"),
        y_label=axis_label("uplink_bytes"),
        y_format=format_bytes,
    )
    return fmt(
        '<div class="grid">{a}{b}</div>',
        a=section("Energy per round", energy, section_id="section-device-energy"),
        b=section("Uplink per round", uplink, section_id="section-device-uplink"),
    )


def _rounds_table(rounds: Sequence[ClientRound]) -> Markup:
    rows = [
        fmt(
            '<tr class="{cls}" data-run="{run}" data-round="{round}"><td><a href="/runs/{run}">'
            '#{run}</a></td><td class="num">{round}</td><td class="num">{e}</td>'
            '<td class="num">{up}</td><td class="num">{down}</td><td class="num">{mem}</td>'
            '<td class="wrap">{outcome}</td></tr>',
            cls="rejected" if r.rejected else ("failed" if r.failure else "trained"),
            run=r.run_id,
            round=r.round,
            e=format_energy(r.energy_j),
            up=format_bytes(r.uplink_bytes),
            down=format_bytes(r.downlink_bytes),
            mem=format_bytes(r.peak_memory_bytes),
            outcome=r.rejected
            and f"rejected: {r.rejected}"
            or (r.failure and f"failed: {r.failure}")
            or "trained",
        )
        for r in rounds
    ]
    headers = [
        ("Run", ""),
        ("Round", "num"),
        ("Energy (J, modelled)", "num"),
        ("Uplink (B)", "num"),
        ("Downlink (B)", "num"),
        ("Peak memory (B)", "num"),
        ("Outcome", ""),
    ]
    return table(headers, rows, table_id="device-rounds")


def _rounds_pages(device_id: int, rounds: Page[ClientRound], first: bool) -> Markup:
    """The table of one key page of the device's rounds, its count, next and first links."""
    if not rounds.count:
        return empty("No rounds yet.", element_id="device-rounds-empty")
    links = []
    if rounds.next_cursor:
        links.append(
            fmt(
                '<a id="device-rounds-next" href="/devices/{id}?{q}#device-rounds-section">'
                "Next page (older rounds)</a>",
                id=device_id,
                q=urlencode({"cursor": rounds.next_cursor}),
            )
        )
    if not first:
        links.append(
            fmt(
                '<a id="device-rounds-first" href="/devices/{id}#device-rounds-section">'
                "First page (newest rounds)</a>",
                id=device_id,
            )
        )
    return fmt(
        '<p class="muted" id="device-rounds-count">{count} round(s) in all; this page shows '
        "{n}, newest first.</p>{table}<p>{links}</p>",
        count=rounds.count,
        n=len(rounds.data),
        table=_rounds_table(rounds.data),
        links=join(links, Markup(" &middot; ")),
    )


def _rejections(rejected: Sequence[ClientRound]) -> Markup:
    if not rejected:
        return empty("None of this device's updates was rejected.", element_id="rejections-empty")
    items = join(
        fmt(
            '<li class="rejection" data-run="{run}" data-round="{round}">Run #{run}, round '
            "{round}: <strong>{kind}</strong> — {reason}</li>",
            run=r.run_id,
            round=r.round,
            kind="rejected" if r.rejected else "failed",
            reason=r.rejected or r.failure,
        )
        for r in rejected
    )
    return fmt('<ul id="rejections">{items}</ul>', items=items)


@dataclass(frozen=True)
class DeviceHistory:
    """What the device page shows of the device's rounds.

    Parameters
    ----------
    rounds : Page[ClientRound]
        One key page of its client-round rows, newest first.
    first : bool
        This is the first page (no cursor was given).
    rejections : Sequence[ClientRound]
        Every rejected or failed update.
    chart_rounds : Sequence[ClientRound]
        Its rows in the newest runs, for the per-round charts.
    bits : Sequence[Mapping[str, Any]]
        ``{run_id, round, layer, bits}`` rows for the heatmaps.
    """

    rounds: Page[ClientRound]
    first: bool
    rejections: Sequence[ClientRound]
    chart_rounds: Sequence[ClientRound]
    bits: Sequence[Mapping[str, Any]]


def device_page(
    *,
    viewer: Viewer,
    device: Device,
    class_cap: str,
    history: DeviceHistory,
    budget: Mapping[str, Any] | None,
) -> Markup:
    """A device: facts, rejections with reasons, bits heatmaps, energy and bytes per round.

    The rounds table shows one key page (``history.rounds``) with a link to the next one.
    """
    facts = fmt(
        '<dl class="facts" id="device-facts"><dt>Class</dt><dd>{cls}</dd><dt>Status</dt>'
        "<dd>{online}</dd><dt>Flower node</dt><dd>{node}</dd><dt>First seen</dt><dd>{first}</dd>"
        "<dt>Last seen</dt><dd>{last}</dd><dt>Class bit range</dt><dd>{cap}</dd>"
        "<dt>Class budget</dt><dd><code>{budget}</code></dd></dl>",
        cls=device.device_class,
        online=_online(device),
        node=device.node_id,
        first=format_time(device.first_seen),
        last=format_time(device.last_seen),
        cap=class_cap,
        budget=json.dumps(budget) if budget else "none",
    )
    body = join(
        [
            fmt('<h1 id="device-title">Device #{id}</h1>', id=device.id),
            section("Device", facts, section_id="device-section"),
            section(
                "Rejected and failed updates",
                _rejections(history.rejections),
                section_id="rejections-section",
            ),
            section(
                "Bits per layer across rounds and runs",
                _heatmaps(history.bits),
                section_id="device-bits",
            ),
            _per_round_charts(history.chart_rounds) if history.chart_rounds else Markup(""),
            section(
                "Every round",
                _rounds_pages(device.id, history.rounds, history.first),
                section_id="device-rounds-section",
            ),
        ]
    )
    return page(title=f"Device {device.id}", body=body, viewer=viewer)
