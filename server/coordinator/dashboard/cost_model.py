"""The cost-model page: how modelled energy is computed, its constants and its citation."""

from __future__ import annotations

import dataclasses

from apt_core.cost import HOROWITZ_45NM
from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.layout import page, section, table
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.quantities import QUANTITIES, basis_tag

CITATION = (
    'M. Horowitz, "Computing\'s energy problem (and what we can do about it)", '
    "IEEE International Solid-State Circuits Conference (ISSCC) 2014, pp. 10-14, "
    "doi:10.1109/ISSCC.2014.6757323 (45 nm process, 0.9 V)."
)

_CONSTANT_NAMES = {
    "int8_mult_pj": ("int8 multiply", "pJ"),
    "int32_add_pj": ("int32 add (the accumulator)", "pJ"),
    "fp32_mult_pj": ("fp32 multiply", "pJ"),
    "fp32_add_pj": ("fp32 add", "pJ"),
    "mem_pj_per_64b": ("DRAM access, 64 bits (upper value; 1 MB SRAM: 100 pJ)", "pJ"),
    "acc_bits": ("accumulator width of integer GEMMs", "bits"),
}

_RULES = (
    "An integer multiply scales with the product of its operand widths: "
    "E_mul(bx, bw) = 0.2 pJ x bx x bw / 64; an adder linearly with its width.",
    "Integer GEMMs accumulate in 32 bits, so every MAC pays one int32 add; "
    "fp32 MACs pay fp32 multiply + fp32 add = 4.6 pJ.",
    "Per step and layer: forward, input-gradient and weight-gradient GEMMs at the method's "
    "operand widths (fp32; qat8 forward int8, backward fp32; apt act_bits x layer bits, "
    "err_bits x layer bits, err_bits x act_bits).",
    "Movement: every parameter and its optimizer state read and written once per step at "
    "their stored widths, times the DRAM energy per bit. Activation traffic is not modelled.",
    "A device's round energy is this per-step energy times its local steps; the run's "
    "fp32 baseline prices the same client-rounds as fp32 FedAvg.",
)


def _constants() -> Markup:
    rows = [
        fmt(
            '<tr data-constant="{key}"><td>{name}</td><td class="num">{value} {unit}</td></tr>',
            key=field.name,
            name=_CONSTANT_NAMES.get(field.name, (field.name, ""))[0],
            value=f"{getattr(HOROWITZ_45NM, field.name):g}",
            unit=_CONSTANT_NAMES.get(field.name, ("", ""))[1],
        )
        for field in dataclasses.fields(HOROWITZ_45NM)
    ]
    return table([("Operation", ""), ("Energy", "num")], rows, table_id="cost-constants")


def _quantities() -> Markup:
    rows = [
        fmt(
            '<tr><td>{name}</td><td>{unit}</td><td>{tag}</td><td class="wrap">{how}</td></tr>',
            name=q.name,
            unit=q.unit or "—",
            tag=basis_tag(q.basis),
            how=q.how,
        )
        for q in QUANTITIES.values()
    ]
    headers = [("Quantity", ""), ("Unit", ""), ("Basis", ""), ("Where it comes from", "")]
    return table(headers, rows, table_id="quantities")


def cost_model_page(*, viewer: Viewer) -> Markup:
    """Which figures are measured, which modelled, and the energy model with its citation."""
    rules = join(fmt("<li>{rule}</li>", rule=rule) for rule in _RULES)
    energy = fmt(
        "<p>Energy on this console is <strong>modelled</strong>, not measured: "
        "<code>apt_core/cost.py</code> counts each device's multiply-accumulates and "
        "parameter movement per training step and prices them with these constants.</p>"
        "{constants}<ul>{rules}</ul>",
        constants=_constants(),
        rules=rules,
    )
    body = fmt(
        '<h1 id="cost-title">Measured and modelled figures</h1>{quantities}{energy}{citation}',
        quantities=section("Every quantity", _quantities(), section_id="measured"),
        energy=section("Energy cost model", energy, section_id="energy"),
        citation=section(
            "Citation", fmt('<p id="citation">{c}</p>', c=CITATION), section_id="citations"
        ),
    )
    return page(title="Cost model", body=body, viewer=viewer)
