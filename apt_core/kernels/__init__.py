"""Integer execution of APT training on this CPU: int8 GEMMs and fused optimizer passes.

``set_backend("int")`` (default) runs APT layers on ``torch._int_mm`` over their int8
codes and APTSGD as fused per-tensor passes; ``set_backend("reference")`` runs the float
emulation that the integer path is tested against.
"""

from apt_core.kernels.backend import BACKENDS, BackendError, get_backend, set_backend

__all__ = ["BACKENDS", "BackendError", "get_backend", "set_backend"]
