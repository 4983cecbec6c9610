"""Turn a stored packed global model into a float PyTorch state_dict for export."""

from __future__ import annotations

import io
from typing import Any

import torch

from apt_core import federated as fed
from apt_core.layers import to_float
from apt_core.wire import unpack


def packed_to_torch(packed: bytes, run: Any) -> bytes:
    """``torch.save`` bytes of the float state_dict of a run's checkpoint (fp32 and qat8
    checkpoints already are one)."""
    if run.method != "apt":
        return packed
    arch = str((run.settings or {}).get("arch", "cnn"))
    model = fed.make_model(run.task, arch, "apt")
    unpack(model, packed)
    buf = io.BytesIO()
    torch.save(to_float(model).state_dict(), buf)
    return buf.getvalue()
