"""Integer execution of APT training on this CPU: int8 GEMMs and fused optimizer passes.

``set_backend("int")`` (default) runs APT layers on exact int8 GEMMs over their int8
codes (``torch._int_mm``, or the codes carried through float32 GEMMs where that is
faster: :mod:`.matmul`) and APTSGD as fused per-tensor passes;
``set_backend("reference")`` runs the float emulation that the integer path is tested
against.
"""

from apt_core.kernels.backend import BACKENDS, BackendError, get_backend, set_backend
from apt_core.kernels.matmul import GEMMS, get_gemm, set_gemm

__all__ = [
    "BACKENDS",
    "GEMMS",
    "BackendError",
    "get_backend",
    "get_gemm",
    "set_backend",
    "set_gemm",
]
