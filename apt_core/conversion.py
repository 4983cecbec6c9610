"""Module swaps between torch float layers and the APT fixed-point layers."""

from __future__ import annotations

import copy

from torch import nn

from apt_core.config import PrecisionPolicy
from apt_core.kernels.activations import APTMaxPool2d, APTReLU
from apt_core.layers import APTConv1d, APTConv2d, APTLayer, APTLinear

_SWAP: dict[type[nn.Module], type[APTLayer]] = {
    nn.Linear: APTLinear,
    nn.Conv1d: APTConv1d,
    nn.Conv2d: APTConv2d,
}


def to_apt(model: nn.Module, policy: PrecisionPolicy | None = None) -> nn.Module:
    """Replace every Linear/Conv1d/Conv2d of ``model`` in place by its APT layer.

    Parameters
    ----------
    model : nn.Module
        Any module tree; other layers are left as they are (and stay float).
    policy : PrecisionPolicy | None (default: None -> PrecisionPolicy())
        Start bit-width and activation/error bits of the new layers.

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    policy = policy or PrecisionPolicy()
    for name, child in list(model.named_children()):
        cls = _SWAP.get(type(child))
        if cls is not None:
            setattr(model, name, cls.from_float(child, policy))  # type: ignore[attr-defined]
        elif type(child) is nn.ReLU:
            setattr(model, name, APTReLU(inplace=child.inplace))
        elif type(child) is nn.MaxPool2d and APTMaxPool2d.supports(child):
            setattr(model, name, _swap_pool(child, APTMaxPool2d))
        else:
            to_apt(child, policy)
    return model


def _swap_pool(m: nn.MaxPool2d, cls: type[nn.MaxPool2d]) -> nn.MaxPool2d:
    return cls(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices, m.ceil_mode)


def to_float(model: nn.Module) -> nn.Module:
    """A float deep copy of ``model`` with every APT layer swapped back to its torch type."""
    out = copy.deepcopy(model)
    _swap_back(out)
    return out


def _swap_back(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, APTLayer):
            setattr(module, name, child.to_float())  # type: ignore[operator]
        elif type(child) is APTReLU:
            setattr(module, name, nn.ReLU(inplace=child.inplace))
        elif type(child) is APTMaxPool2d:
            setattr(module, name, _swap_pool(child, nn.MaxPool2d))
        else:
            _swap_back(child)


def apt_layers(model: nn.Module) -> dict[str, APTLayer]:
    """Every APT layer of ``model`` by qualified name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, APTLayer)}


def layer_bits(model: nn.Module) -> dict[str, int]:
    """Current bit-width of every APT layer."""
    return {n: m.n_bits for n, m in apt_layers(model).items()}
