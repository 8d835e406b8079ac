"""Datasets that need no download: scikit-learn's digits (shipped with the package)."""
from __future__ import annotations

import numpy as np
import torch


def load_digits_split(test_fraction=0.25, seed=0):
    """Digits as float tensors (N, 1, 8, 8) scaled to [0, 1], split into train and test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]
