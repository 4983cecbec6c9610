"""The float export of a stored checkpoint (GET /runs/{id}/model?format=torch)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import torch

from apt_core import federated as fed
from apt_core.layers import to_float
from apt_core.wire import pack
from server.coordinator.services.model_export import packed_to_torch


def test_packed_to_torch_apt_checkpoint_matches_dequantized_model() -> None:
    # Prepare: a packed APT digits CNN, as a round stores it
    model = fed.make_model("digits", "cnn", "apt", seed=3)
    run = SimpleNamespace(task="digits", method="apt", settings={"arch": "cnn"})

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
    run = SimpleNamespace(task="digits", method="fp32", settings={})

    # Execute / Assert
    assert packed_to_torch(buf.getvalue(), run) == buf.getvalue()
