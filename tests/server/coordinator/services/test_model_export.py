"""The float export of a stored checkpoint (GET /runs/{id}/model?format=torch)."""

from __future__ import annotations

import io

import pytest
import torch

from apt_core import federated as fed
from apt_core.conversion import to_float
from apt_core.wire import pack
from server.coordinator.services.model_export import packed_to_torch
from server.coordinator.tables import Run


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_packed_to_torch_apt_checkpoint_matches_dequantized_model(arch: str) -> None:
    # Prepare: a packed APT digits model, as a round stores it; the run's stored settings
    # name its architecture
    model = fed.make_model("digits", arch, "apt", seed=3)
    settings = fed.RunSettings(task="digits", arch=arch, method="apt")
    run = Run(task="digits", method="apt", alpha=0.5, seed=0, settings=settings.to_dict())

    # Execute
    state = torch.load(io.BytesIO(packed_to_torch(pack(model), run)), weights_only=True)

    # Assert: a plain float state_dict equal to the dequantized integer model
    expected = to_float(model).state_dict()
    assert set(state) == set(expected)
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_packed_to_torch_fp32_checkpoint_passes_through() -> None:
    # Prepare: fp32 runs store a torch.save'd float state_dict already
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    run = Run(task="digits", method="fp32", alpha=0.5, seed=0, settings={})

    # Execute / Assert
    assert packed_to_torch(buf.getvalue(), run) == buf.getvalue()
