"""Small float networks that mix every layer type APT converts."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
