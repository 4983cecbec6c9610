"""Tests for the float reference models."""

import pytest
import torch
from torch import nn

from apt_core.tasks.networks import MODEL_NAMES, build_model

_INPUT_SHAPES = {"digits": (1, 8, 8), "mnist1d": (1, 40)}
_COMBOS = [(task, arch) for task in _INPUT_SHAPES for arch in MODEL_NAMES]
_PARAM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@pytest.mark.parametrize(("task", "arch"), _COMBOS)
def test_build_model_output_shape(task: str, arch: str) -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model(task, arch)
    x = torch.randn(5, *_INPUT_SHAPES[task])

    # Execute
    logits = model(x)

    # Assert
    assert logits.shape == (5, 10)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize(("task", "arch"), _COMBOS)
def test_build_model_params_only_in_linear_and_conv(task: str, arch: str) -> None:
    # Prepare
    model = build_model(task, arch)

    # Execute
    owners = [type(m) for m in model.modules() if list(m.parameters(recurse=False))]
    buffers = list(model.buffers())

    # Assert
    assert owners and all(issubclass(t, _PARAM_LAYERS) for t in owners)
    assert buffers == []
    assert not any(
        isinstance(m, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm | nn.Dropout)
        for m in model.modules()
    )


@pytest.mark.parametrize("task", list(_INPUT_SHAPES))
def test_build_model_cnn_head_small(task: str) -> None:
    # Prepare
    model = build_model(task, "cnn")

    # Execute
    total = sum(p.numel() for p in model.parameters())
    head = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters()
    )

    # Assert
    assert head < 0.05 * total


@pytest.mark.parametrize(("task", "arch"), _COMBOS)
def test_build_model_gradients_reach_every_parameter(task: str, arch: str) -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model(task, arch)
    x, y = torch.randn(8, *_INPUT_SHAPES[task]), torch.arange(8)

    # Execute
    nn.functional.cross_entropy(model(x), y).backward()

    # Assert
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_build_model_unknown_task_names_field() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="task='cifar'"):
        build_model("cifar", "cnn")


def test_build_model_unknown_arch_names_field() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="arch='resnet'"):
        build_model("digits", "resnet")


@pytest.mark.parametrize(("task", "in_features"), [("digits", 64), ("mnist1d", 40)])
def test_build_model_mlp_wide_layer_sizes(task: str, in_features: int) -> None:
    # Prepare
    model = build_model(task, "mlp-wide")

    # Execute
    sizes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]

    # Assert
    assert sizes == [(in_features, 1024), (1024, 1024), (1024, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
