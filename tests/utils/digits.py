"""The sklearn digits task as in-memory tensors, loaded straight from scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


@dataclass(frozen=True, eq=False)
class Digits:
    """Standardized 8x8 digits flattened to 64 features; a fixed 80/20 split."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def train_loader(self, batch_size: int = 32, seed: int = 0) -> DataLoader:
        """Shuffled training batches in a seed-fixed order."""
        return DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )

    def test_loader(self, batch_size: int = 512) -> DataLoader:
        """Test batches in order."""
        return DataLoader(TensorDataset(self.x_test, self.y_test), batch_size=batch_size)


def load_digits_task(seed: int = 0) -> Digits:
    """Digits split 80/20 with a seeded permutation, standardized with train statistics."""
    x_np, y_np = load_digits(return_X_y=True)
    x = torch.tensor(x_np, dtype=torch.float32)
    y = torch.tensor(y_np, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = int(0.8 * len(x))
    mean = x[:n_train].mean(0)
    std = x[:n_train].std(0).clamp_min(1e-3)  # some border pixels are always zero
    x = (x - mean) / std
    return Digits(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
