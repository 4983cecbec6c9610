"""Turn a stored packed global model into a float PyTorch state_dict for export."""

from __future__ import annotations

import io

import torch

from apt_core import federated as fed
from apt_core.conversion import to_float
from apt_core.wire import unpack
from server.coordinator.services.run_settings import run_settings_of
from server.coordinator.tables import Run


def packed_to_torch(packed: bytes, run: Run) -> bytes:
    """``torch.save`` bytes of the float state_dict of a run's checkpoint.

    Checkpoints of fp32 and qat8 runs already are one.
    """
    if run.method != "apt":
        return packed
    settings = run_settings_of(run)
    model = fed.make_model(settings.task, settings.arch, "apt")
    unpack(model, packed)
    buf = io.BytesIO()
    torch.save(to_float(model).state_dict(), buf)
    return buf.getvalue()
