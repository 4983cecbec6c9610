"""Float reference models for the benchmark tasks, before conversion to fixed point."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from torch import nn

from apt_core.errors import ModelError
from apt_core.tasks.data import TASK_NAMES

MODEL_NAMES = ("cnn", "mlp", "mlp-wide")

#: Flattened input size of each task (digits: 1x8x8 images, mnist1d: 1x40 signals).
_IN_FEATURES = {"digits": 64, "mnist1d": 40}

# Every parameter lives in a Linear or Conv weight/bias (no norm or dropout layers), so the
# fixed-point conversion covers the whole model. The CNNs keep the linear head small
# (global average pooling) so that compute, not parameter count, dominates their cost.


def _digits_cnn() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 32, kernel_size=3, padding=1)),
                ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(32, 64, kernel_size=3, padding=1)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("conv3", nn.Conv2d(64, 64, kernel_size=3, padding=1)),
                ("relu3", nn.ReLU()),
                ("gap", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(64, 10)),
            ]
        )
    )


def _digits_mlp() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(64, 128)),
                ("relu1", nn.ReLU()),
                ("fc2", nn.Linear(128, 64)),
                ("relu2", nn.ReLU()),
                ("fc3", nn.Linear(64, 10)),
            ]
        )
    )


def _mnist1d_cnn() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv1d(1, 32, kernel_size=5, padding=2)),
                ("relu1", nn.ReLU()),
                ("conv2", nn.Conv1d(32, 64, kernel_size=3, stride=2, padding=1)),
                ("relu2", nn.ReLU()),
                ("conv3", nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)),
                ("relu3", nn.ReLU()),
                ("conv4", nn.Conv1d(64, 64, kernel_size=3, padding=1)),
                ("relu4", nn.ReLU()),
                ("gap", nn.AdaptiveAvgPool1d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(64, 10)),
            ]
        )
    )


def _mnist1d_mlp() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(40, 256)),
                ("relu1", nn.ReLU()),
                ("fc2", nn.Linear(256, 128)),
                ("relu2", nn.ReLU()),
                ("fc3", nn.Linear(128, 10)),
            ]
        )
    )


def _wide_mlp(in_features: int) -> nn.Sequential:
    # The runtime benchmark's GEMM-bound model (issue 9: MLP 64-1024-1024-10): its two
    # 1024-wide layers make the step cost the GEMMs, not the per-op overhead of a small net.
    return nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(in_features, 1024)),
                ("relu1", nn.ReLU()),
                ("fc2", nn.Linear(1024, 1024)),
                ("relu2", nn.ReLU()),
                ("fc3", nn.Linear(1024, 10)),
            ]
        )
    )


_BUILDERS: dict[tuple[str, str], Callable[[], nn.Sequential]] = {
    ("digits", "cnn"): _digits_cnn,
    ("digits", "mlp"): _digits_mlp,
    ("mnist1d", "cnn"): _mnist1d_cnn,
    ("mnist1d", "mlp"): _mnist1d_mlp,
    **{(task, "mlp-wide"): partial(_wide_mlp, n) for task, n in _IN_FEATURES.items()},
}


def build_model(task: str, arch: str) -> nn.Module:
    """Build a freshly initialized float model for a task.

    Parameters
    ----------
    task : str
        ``"digits"`` (inputs ``(N, 1, 8, 8)``) or ``"mnist1d"`` (inputs ``(N, 1, 40)``).
    arch : str
        ``"cnn"``, ``"mlp"`` or ``"mlp-wide"``. ``"mlp-wide"`` is the same
        ``in-1024-1024-10`` ReLU MLP on both tasks, its first layer taking the task's
        flattened input (64 on digits, 40 on mnist1d); the runtime benchmark uses it.

    Returns
    -------
    nn.Module
        An ``nn.Sequential`` of named layers (``conv1``, ..., ``fc``) returning
        ``(N, 10)`` logits. Initialization follows the global torch seed.
    """
    if task not in TASK_NAMES:
        raise ModelError(f"Unknown task: task={task!r} is not one of {list(TASK_NAMES)}.")
    if arch not in MODEL_NAMES:
        raise ModelError(f"Unknown model: arch={arch!r} is not one of {list(MODEL_NAMES)}.")
    return _BUILDERS[(task, arch)]()
