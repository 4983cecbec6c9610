"""What an APT layer holds between its forward and the optimizer step.

On the reference backend ``forward`` decodes float weights that autograd fills with
gradients; on the integer backend the backward hands over exact integer gradients
(:meth:`StepState.accept_grad`), a wide layer's weight gradient deferred as int8
factors. The optimizer reads them (:meth:`StepState.grad_of`) and ``release`` drops them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from apt_core.kernels.weight_grad import DeferredGrad, as_tensor
from apt_core.quant import dequantize


class StepState:
    """Mixin of :class:`apt_core.layers.APTLayer`: the tensors of the current step.

    The layer provides ``codes``, ``exponent``, ``to_matrix``, ``from_matrix``,
    ``bias_shape`` and ``training``.
    """

    _live: dict[str, Tensor]  # float tensors of the current step only
    _grads: dict[str, tuple[Tensor | DeferredGrad, int]]  # integer-path gradients
    _stepping: bool
    bias_shape: tuple[int, ...] | None
    training: bool

    if TYPE_CHECKING:  # provided by the layer

        def codes(self, which: str = "weight") -> Tensor:
            """The tensor's integer codes (int32, real shape)."""

        def exponent(self, which: str = "weight") -> int:
            """The tensor's exponent f (step 2**-f)."""

        def to_matrix(self, which: str, t: Tensor) -> Tensor:
            """A real-shape tensor in the stored ``(out, fan_in)`` order."""

        def from_matrix(self, which: str, m: Tensor) -> Tensor:
            """Inverse of :meth:`to_matrix`."""

    def _init_step_state(self) -> None:
        self._live = {}
        self._grads = {}
        self._stepping = False

    def live(self, which: str) -> Tensor | None:
        """The float tensor of the current step (with its gradient), if any.

        On the reference backend ``forward`` decodes it; on the integer backend it is
        only materialized on request (for inspection), with the integer gradient
        dequantized into ``.grad``. It exists only between ``forward`` and the step.
        """
        t = self._live.get(which)
        if t is None and self._stepping and (which == "weight" or self.bias_shape):
            t = dequantize(self.codes(which), self.exponent(which)).requires_grad_(True)
            self._live[which] = t
        if t is not None and t.grad is None and which in self._grads:
            acc, e = self._grads[which]
            t.grad = self.from_matrix(which, as_tensor(acc).to(torch.float32) * 2.0**-e)
        return t

    def live_codes(self, which: str) -> Tensor:
        """The integer codes of the current step (int32, real shape)."""
        codes = self._live.get(f"{which}_codes")
        return self.codes(which) if codes is None else codes

    def grad_of(self, which: str) -> tuple[Tensor | DeferredGrad, int] | None:
        """Gradient of this step in stored order, as ``(g, e)`` meaning g * 2**-e.

        ``g`` is a tensor, or for a wide layer's weight the deferred integer product
        (:class:`apt_core.kernels.weight_grad.DeferredGrad`, read in row blocks).
        """
        t = self._live.get(which)
        if t is not None and t.grad is not None:
            return self.to_matrix(which, t.grad), 0
        return self._grads.get(which)

    def accept_grad(self, which: str, grad: Tensor | DeferredGrad, exponent: int) -> None:
        """Take (or add to) this step's gradient from the integer backward."""
        old = self._grads.get(which)
        if old is not None:  # a second backward before the step: accumulate in float
            grad = (
                as_tensor(old[0]).to(torch.float32) * 2.0 ** -old[1]
                + as_tensor(grad).to(torch.float32) * 2.0**-exponent
            )
            exponent = 0
        self._grads[which] = (grad, exponent)

    def release(self) -> None:
        """Drop the float tensors and gradients of the current step."""
        self._live.clear()
        self._grads.clear()
        self._stepping = False

    def _decoded(self, which: str) -> Tensor:
        codes = self.codes(which)
        value = dequantize(codes, self.exponent(which))
        if torch.is_grad_enabled() and self.training:
            value.requires_grad_(True)
            self._live[which] = value
            self._live[f"{which}_codes"] = codes
        return value
