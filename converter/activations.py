"""ANN activations the converter understands beyond ReLU: clip and QCFS."""
from __future__ import annotations

import torch
from torch import nn


class ClipReLU(nn.Module):
    """clip(x, 0, threshold): a ReLU with a fixed upper bound; converts with θ = threshold."""

    def __init__(self, threshold: float = 1.0):
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x):
        return x.clamp(0.0, self.threshold)

    def extra_repr(self):
        return f"threshold={self.threshold}"


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (METHODS.md):
    a = λ · clip(floor(z·L/λ + 1/2) / L, 0, 1), λ trainable, straight-through floor.
    Converts with θ = λ and v0 = θ/2.
    """

    def __init__(self, levels: int = 8, init_threshold: float = 8.0):
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(init_threshold)))

    def forward(self, x):
        lam = self.threshold
        y = _FloorSTE.apply(x * self.levels / lam + 0.5) / self.levels
        return lam * y.clamp(0.0, 1.0)

    def extra_repr(self):
        return f"levels={self.levels}"
