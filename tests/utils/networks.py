"""Small float networks that mix every layer type APT converts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from apt_core import PrecisionPolicy
from apt_core.conversion import apt_layers, to_apt


class MixedNet(nn.Module):
    """Conv2d -> (Conv1d, ReLU inside a Sequential) -> Linear, on 1x6x6 inputs.

    The convolutions use stride, padding, dilation and groups so that a converted copy
    has to carry every conv argument through ``to_apt`` and ``to_float``.
    """

    input_shape = (1, 6, 6)

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1, bias=bias)  # -> 4x6x6
        self.body = nn.Sequential(
            nn.Conv1d(
                4, 6, kernel_size=3, stride=2, padding=1, dilation=2, groups=2, bias=bias
            ),  # 4x36 -> 6x17
            nn.ReLU(),
        )
        self.head = nn.Linear(6 * 17, 5, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv(x)).flatten(2)
        x = self.body(x)
        return self.head(x.flatten(1))


def make_mixed_net(seed: int = 0, bias: bool = True) -> MixedNet:
    """A :class:`MixedNet` with weights drawn from a fixed seed."""
    torch.manual_seed(seed)
    return MixedNet(bias=bias)


def make_mixed_input(batch: int = 4, seed: int = 1) -> Tensor:
    """A fixed random batch for :class:`MixedNet`."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *MixedNet.input_shape), generator=gen)


def converted_mixed_net(
    seed: int = 0, policy: PrecisionPolicy | None = None, bias: bool = True
) -> nn.Module:
    """A :class:`MixedNet` converted with ``to_apt`` (default policy unless given)."""
    return to_apt(make_mixed_net(seed, bias=bias), policy or PrecisionPolicy())


def disable_act_err_quantization(model: nn.Module) -> None:
    """Switch off the activation and error quantization of every APT layer of ``model``."""
    # The policy only allows 2..16 bits; 0 switches the STE off (quantize_* return x).
    for layer in apt_layers(model).values():
        layer.act_bits = 0
        layer.err_bits = 0
